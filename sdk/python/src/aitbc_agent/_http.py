"""HTTP to the marketplace, sync and async over one set of rules: Bearer API keys, JSON bodies,
an Idempotency-Key on every state-changing request (so a retry after a lost answer cannot act
twice), and every refusal turned into the ApiError subclass of its problem+json `code`."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable

import httpx

from .errors import PROBLEM_CLASSES, ApiError, ApiUnreachable

REQUEST_TIMEOUT_S = 30.0
# A request that could not reach the API, or found it `unavailable` (503), is retried this many
# times in all, with the same Idempotency-Key, RETRY_PAUSE_S apart.
ATTEMPTS_MAX = 3
RETRY_PAUSE_S = 0.5
_MUTATING = frozenset({"POST", "PATCH", "PUT", "DELETE"})

# Called with (method, path, json body) before each request is sent: for logging, and for the
# tests that check every body the SDK sends against the served OpenAPI document.
request_observers: list[Callable[[str, str, Any], None]] = []


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    problem: dict[str, Any] = {}
    try:
        value = response.json()
        if isinstance(value, dict):
            problem = value
    except ValueError:
        pass
    code = problem.get("code") if isinstance(problem.get("code"), str) else f"http_{response.status_code}"
    detail = problem.get("detail") if isinstance(problem.get("detail"), str) else response.text[:200]
    field = problem.get("field") if isinstance(problem.get("field"), str) else None
    cls = PROBLEM_CLASSES.get(code, ApiError)
    raise cls(response.status_code, code, detail, field, problem)


def _decode(response: httpx.Response) -> Any:
    _raise_for(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


class Transport:
    """One marketplace API, with or without an API key."""

    def __init__(self, api: str, api_key: str | None = None, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.api = api.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s

    def with_key(self, api_key: str) -> "Transport":
        return Transport(self.api, api_key, timeout_s=self.timeout_s)

    def _prepare(self, method: str, path: str, body: Any, idempotency_key: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if method in _MUTATING:
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        for observe in request_observers:
            observe(method, path, body)
        return headers

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None, idempotency_key: str | None = None) -> Any:
        headers = self._prepare(method, path, json, idempotency_key)
        url = self.api + path
        for attempt in range(1, ATTEMPTS_MAX + 1):
            try:
                with httpx.Client(timeout=self.timeout_s) as http:
                    response = http.request(method, url, json=json, params=params, headers=headers)
            except httpx.TransportError as e:
                if attempt == ATTEMPTS_MAX:
                    raise ApiUnreachable(url, str(e) or type(e).__name__) from e
                time.sleep(RETRY_PAUSE_S)
                continue
            if response.status_code == 503 and attempt < ATTEMPTS_MAX:
                time.sleep(RETRY_PAUSE_S)
                continue
            return _decode(response)
        raise AssertionError("unreachable")

    async def arequest(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None, idempotency_key: str | None = None) -> Any:
        headers = self._prepare(method, path, json, idempotency_key)
        url = self.api + path
        # A client per call: provider objects outlive event loops (asyncio.run per step), and
        # an httpx.AsyncClient is bound to the loop that first used it.
        for attempt in range(1, ATTEMPTS_MAX + 1):
            try:
                async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                    response = await http.request(method, url, json=json, params=params, headers=headers)
            except httpx.TransportError as e:
                if attempt == ATTEMPTS_MAX:
                    raise ApiUnreachable(url, str(e) or type(e).__name__) from e
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if response.status_code == 503 and attempt < ATTEMPTS_MAX:
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            return _decode(response)
        raise AssertionError("unreachable")
