"""Password hashing (pwdlib, Argon2id) and access tokens (PyJWT, HS256).

Why these libraries: PyJWT and pwdlib are the maintained successors of python-jose and passlib;
passlib is unmaintained and breaks with bcrypt 5.

Tokens carry ``sub`` (the username), ``iat`` and ``exp``; decoding accepts HS256 only (an
explicit algorithms list, so ``alg=none`` and algorithm-confusion tokens are rejected) and
requires ``sub`` and ``exp``.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

ALGORITHM = "HS256"

_password_hash = PasswordHash((Argon2Hasher(),))


class TokenError(ValueError):
    """A token that is malformed, wrongly signed, expired or lacks a claim."""


def hash_password(password: str) -> str:
    """Argon2id hash of ``password`` (PHC string, salt included)."""
    return _password_hash.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """True when ``password`` matches ``password_hash`` (constant-time comparison)."""
    return _password_hash.verify(password, password_hash)


@lru_cache(maxsize=1)
def dummy_hash() -> str:
    """A hash of a random password, verified for unknown users so login timing reveals nothing."""
    return hash_password("dummy password of a user that does not exist")


def create_access_token(
    subject: str, *, secret_key: str, expires_in: dt.timedelta, now: dt.datetime | None = None
) -> str:
    """A signed HS256 JWT with ``sub=subject``, ``iat=now`` and ``exp=now+expires_in``."""
    issued = now or dt.datetime.now(dt.UTC)
    claims = {"sub": subject, "iat": issued, "exp": issued + expires_in}
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def decode_access_token(token: str, *, secret_key: str) -> str:
    """The ``sub`` (username) of a valid token.

    Raises:
        TokenError: the token is malformed, not HS256 (including ``alg=none``), signed with
            another key, expired, or lacks ``sub``/``exp``.
    """
    try:
        claims = jwt.decode(
            token, secret_key, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("the token has expired; log in again") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError("the token is invalid") from exc
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenError("the token is invalid")
    return subject
