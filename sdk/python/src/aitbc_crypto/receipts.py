"""Receipt verification against known keys only.

A receipt verifies when its body obeys the format's rules (version, attempt, timestamps, and
`price == units x unit_price` rounded half up to the nano-AITBC) and its provider `signature`
verifies, with Ed25519, over the RFC 8785 bytes of every member but the two signatures, under a
key the verifier already trusts: the marketplace's published keys (`GET /v1/keys`) or a pinned
key file. A key the receipt names for itself is never used; a receipt with a member the format
does not have is refused, so nothing unsigned rides along. The marketplace's
`countersignature` is checked against the marketplace's own key whenever the key set names one.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import httpx
import nacl.exceptions
import nacl.signing

from aitbc_agent.errors import AitbcError, ValidationError

from .jcs import CanonicalizationError, canonicalize

ALG_ED25519 = "Ed25519"
# The format's versions this verifier knows (the server's RECEIPT_VERSION_MIN..=RECEIPT_VERSION).
RECEIPT_VERSIONS = (1, 2)
# A job's attempts are numbered 1..=ATTEMPT_MAX; timestamps are unix seconds in this range.
ATTEMPT_MAX = 100
TIMESTAMP_S_MIN = 1_577_836_800
TIMESTAMP_S_MAX = 7_258_118_400
# Key documents and receipt files read from disk are at most this large (as the CLI's).
FILE_BYTES_MAX = 1 << 20
# Published keys are reused for this long; an unknown key id refetches them at once.
KEYS_CACHE_TTL_S = 300.0
# Marketplaces whose keys are cached at once, at most.
KEYS_CACHE_ENTRIES_MAX = 16
KEYS_FETCH_TIMEOUT_S = 10.0

_SIGNED_MEMBERS = frozenset({
    "version", "receipt_id", "job_id", "gpu_id", "attempt", "provider", "client", "units",
    "unit_type", "unit_price", "price", "model", "started_at", "completed_at",
    "prompt_tokens", "completion_tokens",
})
_REQUIRED = ("version", "receipt_id", "job_id", "gpu_id", "attempt", "provider", "client", "units",
             "unit_type", "unit_price", "price", "started_at", "completed_at", "signature")
_SIGNATURES = ("signature", "countersignature")
# The wire formats of the three decimals (the OpenAPI document's Amount, Rate and GpuMillis).
_AMOUNT = re.compile(r"^[0-9]{1,10}(\.[0-9]{1,9})?$")
_RATE = re.compile(r"^[0-9]{1,7}(\.[0-9]{1,12})?$")
_GPU_MILLIS = re.compile(r"^[0-9]{1,16}(\.[0-9]{1,3})?$")
_NANO = decimal.Decimal("0.000000001")
# Enough digits that units (19 digits) x unit_price (19 digits) is exact before rounding.
_EXACT = decimal.Context(prec=60)


class KeysUnavailable(AitbcError):
    """The trusted keys could not be read, so the receipt could not be checked at all."""


@dataclass(frozen=True)
class Verification:
    """What verifying a receipt found. `valid` needs the provider's signature to verify and the
    countersignature not to fail; `countersignature` is None when it was not checked (the keys
    name no marketplace key, or the receipt has none)."""

    valid: bool
    provider_signature: bool
    countersignature: bool | None
    error: str | None
    keys: str

    def __bool__(self) -> bool:
        return self.valid


def _decode_public_key(entry: Mapping[str, Any]) -> nacl.signing.VerifyKey:
    if not isinstance(entry, Mapping) or set(entry) != {"key_id", "alg", "public_key"}:
        raise ValidationError("a key entry is {key_id, alg, public_key}", field="keys")
    if entry["alg"] != ALG_ED25519:
        raise ValidationError(f"key {entry['key_id']!r}: algorithm {entry['alg']!r} is not Ed25519", field="keys")
    try:
        raw = base64.b64decode(entry["public_key"], validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise ValidationError(f"key {entry['key_id']!r}: public_key is not base64", field="keys") from e
    if len(raw) != 32:
        raise ValidationError(f"key {entry['key_id']!r}: public_key is not 32 bytes", field="keys")
    return nacl.signing.VerifyKey(raw)


class KeySet:
    """Trusted public keys by id: the providers' (for signatures) and the marketplace's (for
    countersignatures only), from a `{"keys": [...], "marketplace_key_id": ...}` document."""

    def __init__(self, document: Mapping[str, Any], source: str = "keys") -> None:
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise ValidationError(f"{source}: a key set is {{\"keys\": [...]}}", field="keys")
        unknown = set(document) - {"keys", "marketplace_key_id"}
        if unknown:
            raise ValidationError(f"{source}: unknown member(s) {sorted(unknown)}", field="keys")
        market_id = document.get("marketplace_key_id")
        self.source = source
        self.marketplace_key_id: str | None = market_id
        self.provider: dict[str, nacl.signing.VerifyKey] = {}
        self.marketplace: dict[str, nacl.signing.VerifyKey] = {}
        for entry in document["keys"]:
            key = _decode_public_key(entry)
            (self.marketplace if entry["key_id"] == market_id else self.provider)[entry["key_id"]] = key

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "KeySet":
        """A pinned key file, as `aitbc receipt verify --keys` reads it."""
        p = Path(path)
        try:
            if p.stat().st_size > FILE_BYTES_MAX:
                raise ValidationError(f"key file {p} is larger than {FILE_BYTES_MAX} bytes", field="keys")
            document = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise KeysUnavailable(f"key file {p}: {e}") from e
        return cls(document, source=str(p))


_cache: dict[str, tuple[float, KeySet]] = {}
_cache_lock = threading.Lock()


def published_keys(api: str | None = None, *, refresh: bool = False) -> KeySet:
    """The marketplace's published keys (`GET /v1/keys`), cached for KEYS_CACHE_TTL_S."""
    from aitbc_agent.home import discover_api

    base = (api or discover_api()).rstrip("/")
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(base)
        if hit is not None and not refresh and now - hit[0] < KEYS_CACHE_TTL_S:
            return hit[1]
    url = f"{base}/v1/keys"
    try:
        response = httpx.get(url, timeout=KEYS_FETCH_TIMEOUT_S)
        response.raise_for_status()
        keys = KeySet(response.json(), source=url)
    except (httpx.HTTPError, ValueError) as e:
        raise KeysUnavailable(f"cannot read the marketplace's keys at {url}: {e}") from e
    with _cache_lock:
        if len(_cache) >= KEYS_CACHE_ENTRIES_MAX and base not in _cache:
            _cache.pop(min(_cache, key=lambda k: _cache[k][0]))
        _cache[base] = (now, keys)
    return keys


def _as_dict(receipt: Any) -> dict[str, Any]:
    """Accepts a receipt as a dict, JSON text, a file path, or an SDK object with `raw`."""
    raw = getattr(receipt, "raw", None)
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(receipt, Mapping):
        return dict(receipt)
    if isinstance(receipt, Path):
        if receipt.stat().st_size > FILE_BYTES_MAX:
            raise ValidationError(f"receipt file {receipt} is larger than {FILE_BYTES_MAX} bytes", field="receipt")
        receipt = receipt.read_text(encoding="utf-8")
    if isinstance(receipt, (str, bytes)):
        try:
            value = json.loads(receipt)
        except json.JSONDecodeError as e:
            raise ValidationError(f"the receipt is not JSON: {e}", field="receipt") from e
        if isinstance(value, dict):
            return value
    raise ValidationError(f"a receipt is a JSON object, not {type(receipt).__name__}", field="receipt")


def _int(receipt: Mapping[str, Any], name: str) -> int:
    value = receipt[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} is not an integer")
    return value


def _decimal(receipt: Mapping[str, Any], name: str, pattern: re.Pattern[str]) -> decimal.Decimal:
    value = receipt[name]
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"{name} {value!r} is not a decimal string of its format")
    return decimal.Decimal(value)


def check_body(receipt: Mapping[str, Any]) -> None:
    """The rules a receipt must satisfy on its own; raises ValueError naming the first broken."""
    unknown = set(receipt) - _SIGNED_MEMBERS - set(_SIGNATURES)
    if unknown:
        raise ValueError(f"unknown member(s) {sorted(unknown)}")
    missing = [m for m in _REQUIRED if m not in receipt]
    if missing:
        raise ValueError(f"missing member(s) {missing}")
    version = _int(receipt, "version")
    if version not in RECEIPT_VERSIONS:
        raise ValueError(f"version {version} is not one of {RECEIPT_VERSIONS}")
    tokens = [k for k in ("prompt_tokens", "completion_tokens") if receipt.get(k) is not None]
    for k in tokens:
        if _int(receipt, k) < 0:
            raise ValueError(f"{k} is negative")
    unit_type = receipt["unit_type"]
    if version == 1:
        # Version 1: GPU-seconds only, and no token counts.
        if unit_type != "gpu_seconds":
            raise ValueError("version 1 has only gpu_seconds units")
        if tokens:
            raise ValueError("version 1 has no token counts")
    elif unit_type not in ("gpu_seconds", "cpu_seconds", "wall_seconds"):
        raise ValueError(f"unit_type {unit_type!r} is unknown")
    if len(tokens) == 1:
        raise ValueError("token counts come in pairs (prompt and completion)")
    if not 1 <= _int(receipt, "attempt") <= ATTEMPT_MAX:
        raise ValueError(f"attempt is outside 1..={ATTEMPT_MAX}")
    started, completed = _int(receipt, "started_at"), _int(receipt, "completed_at")
    for t in (started, completed):
        if not TIMESTAMP_S_MIN <= t <= TIMESTAMP_S_MAX:
            raise ValueError(f"timestamp {t} is outside {TIMESTAMP_S_MIN}..={TIMESTAMP_S_MAX}")
    if completed < started:
        raise ValueError("completed_at is before started_at")
    for name in ("receipt_id", "job_id", "gpu_id", "provider", "client"):
        if not isinstance(receipt[name], str):
            raise ValueError(f"{name} is not a string")
    if receipt.get("model") is not None and not isinstance(receipt["model"], str):
        raise ValueError("model is not a string")
    units = _decimal(receipt, "units", _GPU_MILLIS)
    unit_price = _decimal(receipt, "unit_price", _RATE)
    price = _decimal(receipt, "price", _AMOUNT)
    expected = _EXACT.multiply(units, unit_price).quantize(_NANO, rounding=decimal.ROUND_HALF_UP, context=_EXACT)
    if price != expected:
        raise ValueError(f"price {price} is not units x unit_price = {expected}")


def signed_bytes(receipt: Mapping[str, Any]) -> bytes:
    """The bytes both signatures cover: RFC 8785 of every member but the signatures."""
    return canonicalize({k: v for k, v in receipt.items() if k not in _SIGNATURES})


def _check_signature(message: bytes, envelope: Any, keys: Mapping[str, nacl.signing.VerifyKey], what: str) -> None:
    if not isinstance(envelope, Mapping) or set(envelope) != {"alg", "key_id", "sig"}:
        raise ValueError(f"{what} is not {{alg, key_id, sig}}")
    if envelope["alg"] != ALG_ED25519:
        raise ValueError(f"{what}: algorithm {envelope['alg']!r} is not Ed25519")
    key = keys.get(envelope["key_id"])
    if key is None:
        raise LookupError(f"{what}: key {envelope['key_id']!r} is not a known key")
    try:
        sig = base64.b64decode(envelope["sig"], validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise ValueError(f"{what} is not base64") from e
    if len(sig) != 64:
        raise ValueError(f"{what} is not 64 bytes")
    try:
        key.verify(message, sig)
    except nacl.exceptions.BadSignatureError as e:
        raise ValueError(f"{what} does not verify") from e


def _verify_with(receipt: dict[str, Any], keys: KeySet) -> Verification:
    try:
        check_body(receipt)
        message = signed_bytes(receipt)
        _check_signature(message, receipt["signature"], keys.provider, "signature")
    except (ValueError, LookupError, CanonicalizationError) as e:
        return Verification(False, False, None, str(e), keys.source)
    counter: bool | None = None
    error = None
    if keys.marketplace_key_id is not None and receipt.get("countersignature") is not None:
        try:
            _check_signature(message, receipt["countersignature"], keys.marketplace, "countersignature")
            counter = True
        except (ValueError, LookupError) as e:
            counter, error = False, str(e)
    return Verification(counter is not False, True, counter, error, keys.source)


def verify_receipt_detailed(receipt: Any, keys: KeySet | Mapping[str, Any] | str | os.PathLike[str] | None = None, *, api: str | None = None) -> Verification:
    """Verifies `receipt` (a dict, JSON text, a Path, or an SDK Receipt) and says what held.

    `keys`: a KeySet, a key document, or the path of a pinned key file; without it, the
    marketplace's published keys at `api` (else the API an SDK Receipt was read from, else the
    API the CLI would use), cached, and fetched
    again once if the receipt names a key id they lack (a provider registered since).
    """
    body = _as_dict(receipt)
    api = api or getattr(receipt, "source_api", None)
    if keys is None:
        published = published_keys(api)
        result = _verify_with(body, published)
        if not result.provider_signature and result.error and "is not a known key" in result.error:
            result = _verify_with(body, published_keys(api, refresh=True))
        return result
    if isinstance(keys, KeySet):
        return _verify_with(body, keys)
    if isinstance(keys, Mapping):
        return _verify_with(body, KeySet(keys))
    return _verify_with(body, KeySet.from_file(keys))


def verify_receipt(receipt: Any, keys: KeySet | Mapping[str, Any] | str | os.PathLike[str] | None = None, *, api: str | None = None) -> bool:
    """True when the receipt verifies against known keys (see verify_receipt_detailed)."""
    return verify_receipt_detailed(receipt, keys, api=api).valid
