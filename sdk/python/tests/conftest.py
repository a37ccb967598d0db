"""Starts `aitbc up` once for the session (binary: AITBC_BIN, default <repo>/target/debug/aitbc)
on a free loopback port with a temporary home and data directory, as scripts/explorer-test.sh
does: no language model (AITBC_MODELS=none), receipts settled within seconds. Its local worker serves
the listings of the provider in `provider_home`, so a listing the SDK registers there runs jobs.

Every request body the SDK sends during a test is checked against the served OpenAPI document
when the test ends (see `check_request_bodies`)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import jsonschema
import pytest

from aitbc_agent import _http

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Market:
    def __init__(self, api: str, root: Path) -> None:
        self.api = api
        self.root = root
        self.provider_home = root / "provider"
        self.data_dir = root / "data"

    def get(self, path: str, api_key: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        r = httpx.get(self.api + path, params=params, headers=headers, timeout=10)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any, api_key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        r = httpx.post(self.api + path, json=body, headers=headers, timeout=10)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    binary = Path(os.environ.get("AITBC_BIN", REPO / "target" / "debug" / "aitbc"))
    if not binary.is_file():
        raise RuntimeError(f"no aitbc binary at {binary}: build it (cargo build -p aitbc) or set AITBC_BIN")
    root = tmp_path_factory.mktemp("market")
    port = free_port()
    m = Market(f"http://127.0.0.1:{port}", root)
    m.provider_home.mkdir()
    env = dict(
        os.environ,
        AITBC_MODELS="none",
        AITBC_HOME=str(m.provider_home),
        AITBC_LISTEN=f"127.0.0.1:{port}",
        AITBC_DATA_DIR=str(m.data_dir),
        # A grace of 0 lets a completion still in flight land behind the batch that read its
        # range: the job then shows settled while its hold stays held until reconciliation (an
        # hour later; ARCHITECTURE.md, "Reconciliation"). Two seconds cover a local completion.
        AITBC_SETTLE_GRACE_S="2",
        AITBC_SETTLE_INTERVAL_S="1",
    )
    log = open(root / "up.log", "wb")
    proc = subprocess.Popen([str(binary), "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(m.api + "/v1/rate-card", timeout=1).is_success:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aitbc up did not start: {(root / 'up.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield m
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def openapi(market: Market) -> dict[str, Any]:
    """The document the running server serves: the API the SDK must match."""
    return market.get("/v1/openapi.json")


@pytest.fixture
def provider_env(market: Market, monkeypatch: pytest.MonkeyPatch) -> Market:
    """The environment the guide's code runs in: the CLI's variables point at the market and
    the provider's home, so calls made without api= or home= find them."""
    monkeypatch.setenv("AITBC_API", market.api)
    monkeypatch.setenv("AITBC_HOME", str(market.provider_home))
    return market


def _template(openapi: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    for template, ops in openapi["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in ops:
            return ops[method.lower()]
    return None


@pytest.fixture(autouse=True)
def check_request_bodies(request: pytest.FixtureRequest) -> Iterator[None]:
    doc = request.getfixturevalue("openapi") if "market" in request.fixturenames or "provider_env" in request.fixturenames else None
    sent: list[tuple[str, str, Any]] = []
    observer = lambda method, path, body: sent.append((method, path, body))  # noqa: E731
    _http.request_observers.append(observer)
    try:
        yield
    finally:
        _http.request_observers.remove(observer)
    if doc is None:
        return
    for method, path, body in sent:
        op = _template(doc, method, path)
        assert op is not None, f"the SDK called {method} {path}, which the served API does not have"
        if body is None:
            continue
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator({**schema, "components": doc["components"]})
        errors = [e.message for e in validator.iter_errors(json.loads(json.dumps(body)))]
        assert not errors, f"{method} {path} body {body} breaks the served schema: {errors}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The guide runs first: it starts, as a new provider does, from a home without an account
    (the session's provider home, whose provider `aitbc up`'s worker serves)."""
    items.sort(key=lambda item: 0 if item.module.__name__.endswith("test_guide") else 1)
