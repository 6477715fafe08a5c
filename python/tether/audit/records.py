"""The receipt record, its hash chain and the signed checkpoints.

Every line of a receipt log is one msgspec-encoded JSON object. `prev` is the SHA-256
(hex) of the previous line's bytes, so editing, inserting, deleting or reordering a line
breaks the chain at that point. Checkpoints (`kind` "open", "mark", "close") carry the
hash of the line before them (`head`) and, with a signing key, an ES256 signature over
it, so a third party holding the public key can verify a log no one could rewrite whole.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

GENESIS = "0" * 64
"""`prev` of the first record of a log."""

DECISION = "decision"
CHECKPOINT_KINDS = ("open", "mark", "close")


# gc=False: a receipt holds only JSON data (strings, numbers, lists and dicts of them),
# never a cycle, so the garbage collector need not track the writer's many receipts.
class Receipt(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One line of a receipt log: a decision or a checkpoint.

    Decision fields: `txn` (task), `agent` (principal uid), `action`, `resource`,
    `decision` ("allow"/"deny"), `reasons` (policy `@id`s), `errors`, `denial` (why a
    deny: "forbid", "no-permit", "revoked", "approval", "error", "audit-overflow"),
    `policies` (policy-set version), `state` and `context` (SHA-256 of the task state
    and of the request context), `leases`, `jti`, `shadow` (the shadow set's decision
    where it differs). `request` holds the redacted request only when the log was opened
    with `record_requests=True` (it is what `tether replay` re-decides).
    Checkpoint fields: `head` (hash of the previous line), `count` (decisions so far),
    `dropped` (decisions dropped so far by the overflow policy), `kid` and `sig`.
    """

    seq: int
    time: float
    kind: str = DECISION
    txn: str | None = None
    agent: str | None = None
    action: str | None = None
    resource: str | None = None
    decision: str | None = None
    reasons: list[str] = []
    errors: list[str] = []
    denial: str | None = None
    policies: int | None = None
    state: str | None = None
    context: str | None = None
    leases: list[str] = []
    jti: str | None = None
    shadow: str | None = None
    request: dict[str, Any] | None = None
    head: str | None = None
    count: int | None = None
    dropped: int | None = None
    kid: str | None = None
    sig: str | None = None
    prev: str = GENESIS


ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(Receipt)


def line_hash(line: bytes) -> str:
    """The chain hash of one encoded line (without its newline)."""
    return hashlib.sha256(line).hexdigest()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _signed_bytes(seq: int, kind: str, head: str, count: int, dropped: int) -> bytes:
    return f"tether-audit-checkpoint/1:{seq}:{kind}:{head}:{count}:{dropped}".encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_checkpoint(key: ec.EllipticCurvePrivateKey, r: Receipt) -> str:
    """ES256 (JWS form: raw r||s, base64url) over the checkpoint's fields."""
    der = key.sign(
        _signed_bytes(r.seq, r.kind, r.head or "", r.count or 0, r.dropped or 0),
        ec.ECDSA(hashes.SHA256()),
    )
    rr, ss = decode_dss_signature(der)
    return _b64(rr.to_bytes(32, "big") + ss.to_bytes(32, "big"))


def checkpoint_signature_ok(key: ec.EllipticCurvePublicKey, r: Receipt) -> bool:
    if r.sig is None:
        return False
    try:
        raw = _unb64(r.sig)
    except ValueError:
        return False
    if len(raw) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        key.verify(
            der,
            _signed_bytes(r.seq, r.kind, r.head or "", r.count or 0, r.dropped or 0),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        return False
    return True


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """A short stable id of a public key (SHA-256 of its DER form, 16 hex digits)."""
    from cryptography.hazmat.primitives import serialization

    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]
