"""aitbc_crypto: receipt verification for the aitbc marketplace (Payments and Receipts).

    from aitbc_crypto import verify_receipt
    is_valid = verify_receipt(receipt)                 # against GET /v1/keys, cached
    is_valid = verify_receipt(receipt, "keys.json")    # against a pinned key file
"""

from .jcs import CanonicalizationError, canonicalize
from .receipts import (
    KeySet,
    KeysUnavailable,
    Verification,
    check_body,
    published_keys,
    signed_bytes,
    verify_receipt,
    verify_receipt_detailed,
)

__all__ = [
    "CanonicalizationError",
    "KeySet",
    "KeysUnavailable",
    "Verification",
    "canonicalize",
    "check_body",
    "published_keys",
    "signed_bytes",
    "verify_receipt",
    "verify_receipt_detailed",
]
