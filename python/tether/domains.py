"""Destinations as a Cedar entity hierarchy: `api.github.com` in `github.com` in `com`.

With the hierarchy registered, an egress allow-list is plain Cedar:

    permit (principal, action == Action::"egress", resource)
    when { resource in Domain::"github.com" };
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tether._core import Engine

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


def egress_host(url: str) -> str:
    """The host a URL (or a bare `host[:port]`) sends to, in one spelling: lowercase,
    IDNA (punycode), no trailing dot, no port or user info. `PASTEBIN.COM`,
    `pastebin.com.` and `https://user@pastebin.com:443/x` are all `pastebin.com`."""
    text = url.strip()
    try:
        host = urlsplit(text if "://" in text else f"//{text}").hostname
    except ValueError as e:
        raise ValueError(f"not a URL or host: {url!r} ({e})") from None
    if not host:
        raise ValueError(f"not a URL or host: {url!r}")
    host = host.removesuffix(".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise ValueError(f"not a host name: {url!r} ({e})") from None
    return normalize_host(host)


def resolve_domain(engine: Engine, url: str, entity_type: str = "Domain") -> str:
    """The entity uid an egress to `url` is decided as: the host's own entity when it is
    registered, else its closest registered parent (`www.pastebin.com` is decided as
    `pastebin.com`), else the unregistered host itself (which no `in` rule matches)."""
    chain = domain_chain(egress_host(url))
    name = next((n for n in chain if engine.has_entity(entity_type, n)), chain[0])
    return f'{entity_type}::"{name}"'
