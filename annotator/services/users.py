"""Users and API tokens: add (the token is returned once), list, revoke, authenticate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from annotator import auth
from annotator.db import users as db
from annotator.db.models import UserRole
from annotator.errors import InvalidInputError, NotFoundError

__all__ = ["Principal", "add_user", "authenticate", "issue_token", "list_users", "revoke_user"]

# last_used_at is written at most this often per token (not a write per request).
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    user_id: int
    name: str
    role: UserRole

    def allows(self, needed: UserRole) -> bool:
        return auth.allows(self.role, needed)


def _role(role: str | UserRole) -> UserRole:
    try:
        return UserRole(role)
    except ValueError as exc:
        choices = ", ".join(r.value for r in UserRole)
        raise InvalidInputError(f"unknown role {role!r}: use one of {choices}") from exc


def add_user(session: Session, name: str, role: str | UserRole) -> str:
    """Create a user with one token; return the token (only its hash is stored)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInputError("a user name is 1 to 200 characters")
    user = db.add_user(session, name, _role(role))
    token = auth.new_token()
    db.add_token(session, user.id, auth.hash_token(token))
    return token


def issue_token(session: Session, name: str) -> str:
    """Another token for an existing user (e.g. after a revoke)."""
    user = db.get_user(session, name)
    token = auth.new_token()
    db.add_token(session, user.id, auth.hash_token(token))
    return token


def revoke_user(session: Session, name: str) -> int:
    """Revoke every token of the user; how many were live."""
    user = db.get_user(session, name)
    return db.revoke_tokens(session, user.id, datetime.now(UTC))


def list_users(session: Session) -> list[tuple[str, UserRole, int, datetime | None]]:
    """(name, role, live tokens, last used) of every user."""
    return [(u.name, UserRole(u.role), n, last) for u, n, last in db.list_users(session)]


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal a token stands for; None when it is unknown or revoked."""
    if not token or len(token) > 256:
        return None
    try:
        token_id, user_id, name, role, last = db.token_owner(session, auth.hash_token(token))
    except NotFoundError:
        return None
    now = datetime.now(UTC)
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    if last is None or now - last > TOUCH_EVERY:
        db.touch_token(session, token_id, now)
    return Principal(user_id, name, role)
