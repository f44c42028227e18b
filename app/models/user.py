"""The ``app_user`` table: accounts allowed to call the API.

Named ``app_user`` because ``user`` is a reserved word in SQL (Postgres needs it quoted).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, Integer, String, false, func, true
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base


class User(Base):
    """An API account; the password is stored only as an Argon2id hash."""

    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=true())
    is_admin: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
