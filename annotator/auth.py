"""API tokens and roles. Pure: no database, no web.

A token is ``ann_`` followed by 43 URL-safe characters (256 random bits). Only its SHA-256 is
stored: with that much entropy a fast hash is enough (nobody can guess the preimage), and a
lookup by hash stays one indexed equality.

Roles are ordered: ``reviewer`` reads, ``engineer`` also launches and stops jobs, exports and
freezes versions, ``admin`` may do everything.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["ROLE_RANK", "TOKEN_PREFIX", "allows", "hash_token", "new_token"]

TOKEN_PREFIX = "ann_"
# The values of ``annotator.db.models.UserRole``, weakest first.
ROLE_RANK: dict[str, int] = {"reviewer": 0, "engineer": 1, "admin": 2}


def new_token() -> str:
    """A fresh API token (shown to its owner once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of ``token``: 64 lowercase hex characters."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def allows(role: str, needed: str) -> bool:
    """True when ``role`` may do what ``needed`` may (admin > engineer > reviewer)."""
    return ROLE_RANK[str(role)] >= ROLE_RANK[str(needed)]
