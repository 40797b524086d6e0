"""Queries of users and their API tokens. Functions take a ``Session`` and only flush."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from annotator.db.models import ApiToken, User, UserRole
from annotator.errors import ConflictError, NotFoundError


def get_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFoundError(f"no user named {name!r}")
    return user


def add_user(session: Session, name: str, role: UserRole) -> User:
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise ConflictError(f"a user named {name!r} already exists")
    user = User(name=name, role=role)
    session.add(user)
    session.flush()
    return user


def add_token(session: Session, user_id: int, token_hash: str) -> ApiToken:
    token = ApiToken(user_id=user_id, token_hash=token_hash)
    session.add(token)
    session.flush()
    return token


def token_owner(
    session: Session, token_hash: str
) -> tuple[int, int, str, UserRole, datetime | None]:
    """(token id, user id, user name, role, last used) of a live (not revoked) token.

    Raises:
        NotFoundError: no such token, or it was revoked.
    """
    row = session.execute(
        select(ApiToken.id, User.id, User.name, User.role, ApiToken.last_used_at)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        raise NotFoundError("unknown or revoked token")
    return row[0], row[1], row[2], UserRole(row[3]), row[4]


def touch_token(session: Session, token_id: int, when: datetime) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=when))


def revoke_tokens(session: Session, user_id: int, when: datetime) -> int:
    """Revoke every live token of a user; how many were live."""
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=when)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def list_users(session: Session) -> list[tuple[User, int, datetime | None]]:
    """Every user with the number of live tokens and when one was last used, by name."""
    live = (
        select(
            ApiToken.user_id,
            func.count(ApiToken.id).label("n"),
            func.max(ApiToken.last_used_at).label("last"),
        )
        .where(ApiToken.revoked_at.is_(None))
        .group_by(ApiToken.user_id)
        .subquery()
    )
    rows = session.execute(
        select(User, live.c.n, live.c.last)
        .outerjoin(live, live.c.user_id == User.id)
        .order_by(User.name)
    )
    return [(u, int(n or 0), last) for u, n, last in rows]
