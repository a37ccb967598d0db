"""aitbc_crypto against the repository's receipt test vectors (samples/receipts), both receipt
versions, and the attacks a verifier must refuse. No server needed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nacl.signing
import pytest

from aitbc_agent.errors import ValidationError
from aitbc_crypto import KeySet, signed_bytes, verify_receipt, verify_receipt_detailed

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "receipts"
VECTORS = json.loads((SAMPLES / "vectors.json").read_text())
PROVIDER = VECTORS["provider_key"]["public"]
MARKET = VECTORS["marketplace_key"]["public"]
# The document GET /v1/keys serves: both keys, naming the marketplace's.
PUBLISHED = {"keys": [PROVIDER, MARKET], "marketplace_key_id": MARKET["key_id"]}


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vectors_verify_with_their_countersignature(vector: dict) -> None:
    receipt = vector["receipt"]
    assert signed_bytes(receipt).decode() == vector["canonical"]
    result = verify_receipt_detailed(receipt, PUBLISHED)
    assert result.valid and result.provider_signature and result.countersignature is True, result


def test_both_receipt_versions_are_covered() -> None:
    assert {v["receipt"]["version"] for v in VECTORS["valid"]} == {1, 2}


@pytest.mark.parametrize("vector", VECTORS["tampered"], ids=lambda v: v["name"])
def test_tampered_vectors_are_refused(vector: dict) -> None:
    result = verify_receipt_detailed(vector["receipt"], PUBLISHED)
    assert not result.valid and result.error


def test_the_sample_receipt_verifies_against_the_pinned_key_file() -> None:
    assert verify_receipt(SAMPLES / "receipt.json", SAMPLES / "keys.json")
    # keys.json names no marketplace key: the countersignature is left unchecked, not trusted.
    assert verify_receipt_detailed(SAMPLES / "receipt.json", SAMPLES / "keys.json").countersignature is None


def test_a_countersignature_verifies_only_under_the_marketplace_key() -> None:
    receipt = dict(VECTORS["valid"][0]["receipt"])
    # The provider signs its own "countersignature": refused, though its key is known.
    receipt["countersignature"] = receipt["signature"]
    result = verify_receipt_detailed(receipt, PUBLISHED)
    assert result.provider_signature and result.countersignature is False and not result.valid


def test_a_key_the_receipt_brings_is_never_trusted() -> None:
    attacker = nacl.signing.SigningKey.generate()
    receipt = dict(VECTORS["valid"][0]["receipt"])
    receipt.pop("countersignature")
    receipt["client"] = "ait1attacker0000001"
    sig = attacker.sign(signed_bytes(receipt)).signature
    receipt["signature"] = {"alg": "Ed25519", "key_id": "attacker-key", "sig": base64.b64encode(sig).decode()}
    assert not verify_receipt(receipt, PUBLISHED)
    # Nor under a known key id: the signature is checked with the known key, not the attacker's.
    receipt["signature"]["key_id"] = PROVIDER["key_id"]
    assert not verify_receipt(receipt, PUBLISHED)
    # Carrying the public key inside the receipt is an unknown member: refused outright.
    receipt["public_key"] = base64.b64encode(bytes(attacker.verify_key)).decode()
    assert "unknown member" in (verify_receipt_detailed(receipt, PUBLISHED).error or "")


def test_floats_and_non_receipts_are_refused() -> None:
    receipt = dict(VECTORS["valid"][0]["receipt"], units=2.5)
    assert not verify_receipt(receipt, PUBLISHED)
    with pytest.raises(ValidationError):
        verify_receipt(42, PUBLISHED)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        KeySet({"keys": [{"key_id": "k", "alg": "Ed25519", "public_key": "short"}]})
