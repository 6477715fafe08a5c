"""Destinations as a Cedar entity hierarchy: `api.github.com` in `github.com` in `com`.

With the hierarchy registered, an egress allow-list is plain Cedar:

    permit (principal, action == Action::"egress", resource)
    when { resource in Domain::"github.com" };
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_MAX_HOST = 253


def normalize_host(host: str) -> str:
    """Lowercase, strip one trailing dot; reject what is not a DNS name."""
    h = host.strip().lower().removesuffix(".")
    if not h or len(h) > _MAX_HOST:
        raise ValueError(f"not a host name: {host!r}")
    for label in h.split("."):
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            raise ValueError(f"not a host name: {host!r}")
        if not all(c.isascii() and (c.isalnum() or c == "-") for c in label):
            raise ValueError(f"not a host name: {host!r} (use the IDNA/punycode form)")
    return h


def domain_chain(host: str) -> list[str]:
    """`a.b.com` -> `["a.b.com", "b.com", "com"]`."""
    labels = normalize_host(host).split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def domain_entities(hosts: Iterable[str], entity_type: str = "Domain") -> list[dict[str, Any]]:
    """Cedar JSON entities for every host and each of its parent domains."""
    parents: dict[str, str | None] = {}
    for host in hosts:
        chain = domain_chain(host)
        for child, parent in zip(chain, [*chain[1:], None], strict=True):
            parents.setdefault(child, parent)
    return [
        {
            "uid": {"type": entity_type, "id": name},
            "attrs": {},
            "parents": [] if parent is None else [{"type": entity_type, "id": parent}],
        }
        for name, parent in sorted(parents.items())
    ]
