"""The bridge between the worker's quality check and a Python checker (`set_quality_checker`).

The worker runs the command its config names (`quality_check` in `<home>/worker.toml`) on each
job's result before completing the job, with the result as JSON on stdin: exit 0 accepts, exit
1 refuses (the job fails for good and its hold is voided), any other exit fails the job
retryably (worker/src/health.rs). `set_quality_checker` serves the checker on a Unix socket in
the provider agent's event loop and names this file as the command:

    <python> -I <this file> <socket>

which forwards stdin to the socket and exits 0 or 1 by the checker's verdict, printing its
reason, and 2 when it cannot get one (no agent listening, a checker that raised, a bad answer):
the worker then retries the job rather than skip the check.

This file runs as a script in the worker's process tree, so it imports only the standard
library (an import error would exit 1, which the worker reads as a refusal).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Union

EXIT_ACCEPT, EXIT_REFUSE, EXIT_BROKEN = 0, 1, 2
# The worker gives a check 30 s (worker/src/health.rs QUALITY_CHECK_TIMEOUT_MS); the bridge
# gives up before that, so its own exit status (2) is what the worker sees.
BRIDGE_TIMEOUT_S = 25.0
# A result as the worker sends it (a text generation's text included), at most.
INPUT_BYTES_MAX = 8 << 20
# The worker keeps the first 200 bytes of a refusal's first line.
REASON_CHARS_MAX = 200
# A Unix socket's path is at most 107 bytes on Linux.
SOCKET_PATH_BYTES_MAX = 100

Verdict = Union[bool, tuple[bool, str]]
Checker = Callable[["JobResult"], Union[Verdict, Awaitable[Verdict]]]


@dataclass(frozen=True)
class JobResult:
    """One job's result as the worker has it, before it completes the job.

    `completion_time`: seconds the worker spent on the job, from its claim to the result.
    `timeout`: the job's time limit in seconds (`timeout_ms` of the job).
    `error_rate`: the share of the result the worker knows to be wrong, 0.0..=1.0. A run that
    fails never reaches the check, and no backend reports partial errors, so it is 0.0 for every
    result the check sees; it is here so that the guide's check reads as written.
    `output`: what the job produced (`checksum`, `backend`, `device_ms`, `wall_ms`, a text
    generation's `text` and `tokens`...)."""

    job_id: str
    kind: str | None
    model: str | None
    completion_time: float
    timeout: float
    error_rate: float
    output: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "JobResult":
        output = data.get("output")
        return cls(
            job_id=str(data["job_id"]),
            kind=data.get("kind"),
            model=data.get("model"),
            completion_time=float(data["completion_time"]),
            timeout=float(data["timeout"]),
            error_rate=float(data.get("error_rate", 0.0)),
            output=output if isinstance(output, dict) else {},
        )


def _verdict(answer: Any) -> tuple[bool, str]:
    """(ok, reason) from what a checker returned: a bool, or the guide's (bool, reason)."""
    if isinstance(answer, bool):
        return answer, ""
    if isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[0], bool):
        return answer[0], str(answer[1])
    raise TypeError(f"a quality checker returns True/False or (ok, reason), not {answer!r}")


def socket_path(home: Path) -> Path:
    """Where this process serves its checker: `<home>/quality/<pid>.sock` (a directory only the
    owner may enter), or a private temporary directory when that path is too long."""
    directory = home / "quality"
    path = directory / f"{os.getpid()}.sock"
    if len(os.fsencode(str(path))) > SOCKET_PATH_BYTES_MAX:
        import tempfile

        directory = Path(tempfile.gettempdir()) / f"aitbc-quality-{os.getuid()}"
        path = directory / f"{os.getpid()}.sock"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    return path


class QualityServer:
    """Serves a checker on a Unix socket in the running event loop: one JSON line in (the
    worker's result), one JSON line out (`{"ok", "reason"}`, or `{"error"}`)."""

    def __init__(self, checker: Checker, path: Path) -> None:
        self.checker = checker
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    def command(self) -> list[str]:
        # -I: isolated (no PYTHON* variables, no user site, not the script's directory first on
        # sys.path, where the SDK's own modules would shadow the standard library's).
        return [sys.executable, "-I", str(Path(__file__).resolve()), str(self.path)]

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.path), limit=INPUT_BYTES_MAX + 1)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            result = JobResult.from_wire(json.loads(line))
            answer: Any = self.checker(result)
            if inspect.isawaitable(answer):
                answer = await answer
            ok, reason = _verdict(answer)
            reply: dict[str, Any] = {"ok": ok, "reason": " ".join(reason.split())[:REASON_CHARS_MAX]}
        except Exception as e:  # noqa: BLE001 - any failure of the check is a broken check, said so
            reply = {"error": f"{type(e).__name__}: {e}"[:REASON_CHARS_MAX]}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()


def _forward(path: str, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(BRIDGE_TIMEOUT_S)
        s.connect(path)
        s.sendall(payload + b"\n")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    answer = json.loads(b"".join(chunks))
    if not isinstance(answer, dict):
        raise ValueError(f"the checker answered {answer!r}")
    return answer


def main(argv: list[str]) -> int:
    """The worker's command: stdin to the checker, its verdict to the exit status."""
    try:
        if len(argv) != 1:
            print("usage: quality.py <socket>", file=sys.stderr)
            return EXIT_BROKEN
        data = sys.stdin.buffer.read(INPUT_BYTES_MAX + 1)
        if len(data) > INPUT_BYTES_MAX:
            print(f"quality bridge: a result larger than {INPUT_BYTES_MAX} bytes", file=sys.stderr)
            return EXIT_BROKEN
        # One line on the socket: the result again, compact.
        answer = _forward(argv[0], json.dumps(json.loads(data), separators=(",", ":")).encode())
        if "error" in answer or not isinstance(answer.get("ok"), bool):
            print(f"quality bridge: {answer.get('error', answer)}", file=sys.stderr)
            return EXIT_BROKEN
        print(answer.get("reason", ""))
        return EXIT_ACCEPT if answer["ok"] else EXIT_REFUSE
    except BaseException as e:  # noqa: BLE001 - exit 1 would read as a refusal: never fall out with it
        print(f"quality bridge: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_BROKEN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
