"""The access token returned by ``POST /auth/token`` (OAuth2 password flow)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Token(BaseModel):
    """A bearer token to send as ``Authorization: Bearer <access_token>``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIs...",
                    "token_type": "bearer",
                    "expires_in": 3600,
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
