"""The CLI's home, read and written as the `aitbc` command does (cli/src/home.rs).

The home is `AITBC_HOME`, else `~/.aitbc`. Its `config.toml` holds what `aitbc init` saved
(`api`, `address`, `role`, `api_key`, `key_file`); the provider's Ed25519 key is a JSON file
(`key_id`, `alg`, `secret_key`, `public_key`, base64) of mode 0600. The API is `AITBC_API`,
else the config's `api`, else http://127.0.0.1:8080. An account the SDK opens is saved the same
way, so the CLI, `aitbc up`'s local worker and `aitbc-worker` all use it.
"""

from __future__ import annotations

import base64
import json
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ConfigError

DEFAULT_API = "http://127.0.0.1:8080"
CONFIG_FILE = "config.toml"
KEY_FILE = "provider-key.json"
# Files read from the home are at most this large (the CLI's HOME_FILE_BYTES_MAX).
HOME_FILE_BYTES_MAX = 1 << 20


def home_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """The argument, else AITBC_HOME, else $HOME/.aitbc."""
    if home is not None:
        return Path(home)
    env = os.environ.get("AITBC_HOME")
    if env:
        return Path(env)
    return Path(os.environ.get("HOME", ".")) / ".aitbc"


def _read_bounded(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > HOME_FILE_BYTES_MAX:
            raise ConfigError(f"{what} {path} is larger than {HOME_FILE_BYTES_MAX} bytes")
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e}") from e


@dataclass
class HomeConfig:
    """What `aitbc init` stores in config.toml."""

    api: str | None = None
    address: str | None = None
    role: str | None = None
    api_key: str | None = None
    key_file: str | None = None

    @classmethod
    def load(cls, home: Path) -> "HomeConfig":
        path = home / CONFIG_FILE
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(_read_bounded(path, "config"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config {path}: {e}") from e
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            # The CLI refuses unknown keys (deny_unknown_fields); so does the SDK.
            raise ConfigError(f"config {path}: unknown key(s) {sorted(unknown)}")
        for name, value in data.items():
            if not isinstance(value, str):
                raise ConfigError(f"config {path}: {name} is not a string")
        return cls(**data)

    def save(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        lines = [f"{f.name} = {_toml_string(getattr(self, f.name))}" for f in fields(self) if getattr(self, f.name) is not None]
        write_private(home / CONFIG_FILE, "\n".join(lines) + "\n")


def _toml_string(value: str) -> str:
    # json.dumps escapes exactly what a TOML basic string needs (quotes, backslashes, controls).
    return json.dumps(value, ensure_ascii=False)


def write_private(path: Path, text: str) -> None:
    """Writes a file only its owner may read (it holds an API key or a secret key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def discover_api(api: str | None = None, home: str | os.PathLike[str] | None = None) -> str:
    """The argument, else AITBC_API, else the home config's `api`, else http://127.0.0.1:8080."""
    if api:
        return api.rstrip("/")
    env = os.environ.get("AITBC_API")
    if env:
        return env.rstrip("/")
    saved = HomeConfig.load(home_dir(home)).api
    return (saved or DEFAULT_API).rstrip("/")


@dataclass(frozen=True)
class SigningKey:
    """A provider's receipt-signing key, in the key file's format (never sent anywhere)."""

    key_id: str
    seed: bytes

    @property
    def public_key_b64(self) -> str:
        import nacl.signing

        return base64.b64encode(bytes(nacl.signing.SigningKey(self.seed).verify_key)).decode()

    def public_entry(self) -> dict[str, str]:
        return {"key_id": self.key_id, "alg": "Ed25519", "public_key": self.public_key_b64}

    def to_file(self) -> dict[str, str]:
        return {"key_id": self.key_id, "alg": "Ed25519", "secret_key": base64.b64encode(self.seed).decode(), "public_key": self.public_key_b64}

    @classmethod
    def generate(cls, key_id: str) -> "SigningKey":
        import nacl.signing

        return cls(key_id, bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def load(cls, path: Path) -> "SigningKey":
        try:
            data = json.loads(_read_bounded(path, "key file"))
            seed = base64.b64decode(data["secret_key"], validate=True)
            key = cls(data["key_id"], seed)
            if len(seed) != 32 or key.public_key_b64 != data["public_key"]:
                raise ValueError("secret and public key disagree")
            return key
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"key file {path}: {e}") from e
