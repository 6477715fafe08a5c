"""Workload identity: SPIFFE IDs, trust bundles, JWT-SVID and WIMSE verification.

Authenticate once (``Authenticator.authenticate``) to get an :class:`Agent` whose
``entity`` is the Cedar principal uid the policy engine authorizes against.
"""

from tether.identity.authenticator import AGENT_ENTITY_TYPE, Agent, Authenticator, cedar_entity_uid
from tether.identity.bundle import (
    JWT_SVID_USE,
    WIT_SVID_USE,
    BundleKey,
    BundleSet,
    FileBundleSource,
    HttpBundleSource,
    SkippedKey,
    StaleBundle,
    TrustBundle,
)
from tether.identity.errors import (
    AuthenticationError,
    ExpiredToken,
    InvalidAudience,
    InvalidBinding,
    InvalidBundle,
    InvalidHeader,
    InvalidSignature,
    InvalidSpiffeId,
    InvalidToken,
    NotYetValid,
    ReplayedProof,
    UnknownKey,
    UnsupportedAlgorithm,
    UntrustedDomain,
)
from tether.identity.issuer import LocalIssuer, generate_proof_key, mint_wpt, public_jwk
from tether.identity.jwt_svid import MAX_TOKEN_BYTES, JwtSvidVerifier, VerifiedSvid
from tether.identity.spiffe_id import SpiffeId
from tether.identity.wimse import ReplayCache, VerifiedProof, VerifiedWit, WimseVerifier

__all__ = [
    "AGENT_ENTITY_TYPE",
    "JWT_SVID_USE",
    "MAX_TOKEN_BYTES",
    "WIT_SVID_USE",
    "Agent",
    "AuthenticationError",
    "Authenticator",
    "BundleKey",
    "BundleSet",
    "ExpiredToken",
    "FileBundleSource",
    "HttpBundleSource",
    "InvalidAudience",
    "InvalidBinding",
    "InvalidBundle",
    "InvalidHeader",
    "InvalidSignature",
    "InvalidSpiffeId",
    "InvalidToken",
    "JwtSvidVerifier",
    "LocalIssuer",
    "NotYetValid",
    "ReplayCache",
    "ReplayedProof",
    "SkippedKey",
    "SpiffeId",
    "StaleBundle",
    "TrustBundle",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "UntrustedDomain",
    "VerifiedProof",
    "VerifiedSvid",
    "VerifiedWit",
    "WimseVerifier",
    "cedar_entity_uid",
    "generate_proof_key",
    "mint_wpt",
    "public_jwk",
]
