"""Queries on ``app_user`` (flush, never commit)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models.user import User


def get_by_username(session: Session, *, username: str) -> User | None:
    """The user named ``username``, or None."""
    return session.scalar(select(User).where(User.username == username))


def create(session: Session, *, username: str, password_hash: str, is_admin: bool) -> User:
    """Add a user and flush (``sqlalchemy.exc.IntegrityError`` if the username is taken)."""
    user = User(username=username, password_hash=password_hash, is_admin=is_admin, is_active=True)
    session.add(user)
    session.flush()
    return user
