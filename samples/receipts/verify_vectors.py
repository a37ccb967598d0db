#!/usr/bin/env python3
"""Checks aitbc receipt test vectors with an implementation independent of the Rust one.

Canonical form: RFC 8785 (JCS), written here from the RFC: members sorted by UTF-16 code units,
no whitespace, strings escaped minimally, integers as plain digits. Signatures: Ed25519 with
PyNaCl (libsodium). Prices: Python's Decimal, rounded half up to 9 decimals.

Usage: verify_vectors.py vectors.json   (exit 0 when every check holds)
"""
import base64
import decimal
import json
import sys

import nacl.exceptions
import nacl.signing


def jcs(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise ValueError("integer outside the safe range")
        return str(value)
    if isinstance(value, str):
        out = ['"']
        short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
        for ch in value:
            if ch in short:
                out.append(short[ch])
            elif ord(ch) < 0x20:
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        names = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(jcs(k) + ":" + jcs(value[k]) for k in names) + "}"
    raise ValueError("floats are not used in receipts: %r" % (value,))


def signed_bytes(receipt):
    body = {k: v for k, v in receipt.items() if k not in ("signature", "countersignature")}
    return jcs(body).encode("utf-8")


def verify(receipt, keys):
    """keys: {key_id: VerifyKey}. Never uses a key carried by the receipt."""
    sig = receipt.get("signature") or {}
    if sig.get("alg") != "Ed25519" or sig.get("key_id") not in keys:
        return False
    known = {"version", "receipt_id", "job_id", "gpu_id", "attempt", "provider", "client", "units",
             "unit_type", "unit_price", "price", "model", "started_at", "completed_at",
             "prompt_tokens", "completion_tokens", "signature", "countersignature"}
    if set(receipt) - known:
        return False
    # Version 1: GPU-seconds and no token counts. Version 2 adds cpu_seconds, wall_seconds (an
    # upstream server's answer time) and the token counts of text generation, which come in pairs.
    tokens = [k for k in ("prompt_tokens", "completion_tokens") if k in receipt]
    if receipt.get("version") == 1:
        if receipt.get("unit_type") != "gpu_seconds" or tokens:
            return False
    elif receipt.get("version") == 2:
        if receipt.get("unit_type") not in ("gpu_seconds", "cpu_seconds", "wall_seconds") or len(tokens) == 1:
            return False
    else:
        return False
    units = decimal.Decimal(receipt["units"])
    unit_price = decimal.Decimal(receipt["unit_price"])
    expected = (units * unit_price).quantize(decimal.Decimal("0.000000001"), rounding=decimal.ROUND_HALF_UP)
    if decimal.Decimal(receipt["price"]) != expected:
        return False
    try:
        keys[sig["key_id"]].verify(signed_bytes(receipt), base64.b64decode(sig["sig"], validate=True))
        return True
    except (nacl.exceptions.BadSignatureError, ValueError):
        return False


def key_of(entry):
    seed = bytes.fromhex(entry["seed_hex"])
    public = base64.b64decode(entry["public"]["public_key"])
    signing = nacl.signing.SigningKey(seed)
    assert bytes(signing.verify_key) == public, "seed and public key disagree"
    return entry["public"]["key_id"], signing.verify_key


def main(path):
    decimal.getcontext().prec = 60
    vectors = json.load(open(path, encoding="utf-8"))
    provider_id, provider = key_of(vectors["provider_key"])
    market_id, market = key_of(vectors["marketplace_key"])
    failures = 0
    for v in vectors["valid"]:
        receipt = v["receipt"]
        if signed_bytes(receipt).decode("utf-8") != v["canonical"]:
            print("FAIL canonical form differs:", v["name"])
            failures += 1
        if not verify(receipt, {provider_id: provider}):
            print("FAIL provider signature:", v["name"])
            failures += 1
        counter = dict(receipt, signature=receipt["countersignature"])
        if not verify(counter, {market_id: market}):
            print("FAIL countersignature:", v["name"])
            failures += 1
        if verify(counter, {provider_id: provider}):
            print("FAIL countersignature verifies under the provider's key:", v["name"])
            failures += 1
    for v in vectors["tampered"]:
        if verify(v["receipt"], {provider_id: provider}):
            print("FAIL tampered receipt verifies:", v["name"])
            failures += 1
    if failures:
        print("%d failures" % failures)
        return 1
    print("%d valid verified, %d tampered refused" % (len(vectors["valid"]), len(vectors["tampered"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
