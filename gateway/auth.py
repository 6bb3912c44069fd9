"""Bearer tokens of the HTTP gateway: stored as SHA-256 digests, compared in constant time.

A token's name (never the token) identifies the caller in audit records, rate limits and logs.
Scopes are separate rights: ``jobs:write`` submits, ``jobs:read`` inspects, ``jobs:admin``
retries and cancels. None implies another; give a token every scope it needs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """A right a token may hold."""

    WRITE = "jobs:write"
    READ = "jobs:read"
    ADMIN = "jobs:admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and its scopes."""

    name: str
    scopes: frozenset[Scope]


@dataclass(frozen=True)
class StoredToken:
    """A configured token: its name, the SHA-256 digest of its secret, and its scopes."""

    name: str
    digest: bytes
    scopes: frozenset[Scope]


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as ``OUTBOX_GATEWAY_TOKENS`` stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class TokenTable:
    """The configured tokens; answers "who is this?" for an ``Authorization`` header."""

    def __init__(self, tokens: Iterable[StoredToken]) -> None:
        self._tokens = tuple(tokens)

    @classmethod
    def from_hex(cls, tokens: Mapping[str, tuple[str, Sequence[str]]]) -> TokenTable:
        """From name -> (hex SHA-256, scope names); ValueError for an unknown scope."""
        return cls(
            StoredToken(name, bytes.fromhex(hex_digest), frozenset(Scope(s) for s in scopes))
            for name, (hex_digest, scopes) in tokens.items()
        )

    def __len__(self) -> int:
        return len(self._tokens)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The caller presenting ``Authorization: Bearer <token>``; None for an unknown token.

        Every stored digest is compared, with :func:`hmac.compare_digest`, whatever matched
        before: the time taken says nothing about which token (or which prefix) came close.
        """
        presented = _bearer_token(authorization)
        if presented is None:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found: StoredToken | None = None
        for stored in self._tokens:
            if hmac.compare_digest(stored.digest, digest):
                found = stored
        return None if found is None else Principal(found.name, found.scopes)


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
