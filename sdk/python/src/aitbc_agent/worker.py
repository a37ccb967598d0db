"""The worker on this machine: the SDK's `aitbc-worker` config file and starting the worker.

`<home>/worker.toml` is in `aitbc-worker run --config`'s format; the SDK writes only its
`[[models]]` (name, GGUF path, sha256: what the worker loads and verifies) and its
`quality_check` (the command `set_quality_checker` registers; the worker, and `aitbc up`'s,
read it again for each result), and passes the rest as flags, the API key through the
environment, so the file holds no secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .home import HOME_FILE_BYTES_MAX, write_private

WORKER_CONFIG_FILE = "worker.toml"
# The worker's own bound on the models one worker serves (worker/src/models.rs MODELS_MAX).
MODELS_MAX = 8
# The worker's bounds on a quality check's command (worker/src/config.rs).
QUALITY_CHECK_ARGS_MAX = 64
QUALITY_CHECK_ARG_BYTES_MAX = 4096


@dataclass
class WorkerConfig:
    path: Path
    models: list[dict[str, str]] = field(default_factory=list)
    quality_check: list[str] | None = None

    @classmethod
    def load(cls, home: Path) -> "WorkerConfig":
        path = home / WORKER_CONFIG_FILE
        if not path.exists():
            return cls(path)
        try:
            if path.stat().st_size > HOME_FILE_BYTES_MAX:
                raise ConfigError(f"worker config {path} is larger than {HOME_FILE_BYTES_MAX} bytes")
            data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"worker config {path}: {e}") from e
        models = data.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, dict) and set(m) == {"name", "path", "sha256"} for m in models):
            raise ConfigError(f"worker config {path}: [[models]] entries are name, path, sha256")
        check = data.get("quality_check")
        if check is not None and not _is_command(check):
            raise ConfigError(f"worker config {path}: quality_check is a command, a list of 1..={QUALITY_CHECK_ARGS_MAX} strings")
        return cls(path, models, check)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blocks = []
        for m in self.models:
            blocks.append("[[models]]\n" + "".join(f"{k} = {json.dumps(m[k])}\n" for k in ("name", "path", "sha256")))
        head = "# Written by the aitbc Python SDK (host_specialized_model, set_quality_checker).\n"
        if self.quality_check is not None:
            assert _is_command(self.quality_check), self.quality_check
            head += f"quality_check = {json.dumps(self.quality_check)}\n"
        # Written aside and renamed: the worker reads the file again for each result and must
        # never see half of it.
        partial = self.path.with_name(self.path.name + ".partial")
        write_private(partial, head + "\n".join(blocks))
        os.replace(partial, self.path)

    def upsert_model(self, name: str, path: str, sha256: str) -> None:
        self.models = [m for m in self.models if m["name"] != name]
        if len(self.models) >= MODELS_MAX:
            raise ConfigError(f"a worker serves at most {MODELS_MAX} models")
        self.models.append({"name": name, "path": path, "sha256": sha256})


def _is_command(argv: Any) -> bool:
    return (
        isinstance(argv, list)
        and 1 <= len(argv) <= QUALITY_CHECK_ARGS_MAX
        and all(isinstance(a, str) and len(a.encode()) <= QUALITY_CHECK_ARG_BYTES_MAX for a in argv)
    )


def worker_command(binary: str, *, api: str, key_file: str, gpu_id: str, queue: str, config: Path | None) -> list[str]:
    cmd = [binary, "run", "--api-url", api, "--key-file", key_file, "--listing", gpu_id, "--queue", queue, "--backend", "auto"]
    if config is not None and config.exists():
        cmd[2:2] = ["--config", str(config)]
    return cmd


def spawn_worker(cmd: list[str], api_key: str, log_path: Path) -> subprocess.Popen[bytes]:
    """Starts the worker in the background; it runs until SIGTERM (Popen.terminate())."""
    env = dict(os.environ, AITBC_API_KEY=api_key)
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps writing to it after we return
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        log.close()
