"""Users as the API shows them (never with the password hash)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict


class UserRead(BaseModel):
    """The authenticated user."""

    model_config = ConfigDict(from_attributes=True)

    username: str
    is_active: bool
    is_admin: bool
    created_at: dt.datetime
