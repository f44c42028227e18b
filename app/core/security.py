"""Password hashing (pwdlib, Argon2id) and access tokens (PyJWT, HS256).

Why these libraries: PyJWT and pwdlib are the maintained successors of python-jose and passlib;
passlib is unmaintained and breaks with bcrypt 5.

Tokens carry ``sub`` (the username), ``iat`` and ``exp``; decoding accepts HS256 only (an
explicit algorithms list, so ``alg=none`` and algorithm-confusion tokens are rejected) and
requires ``sub`` and ``exp``.

:class:`VerifiedTokens` remembers the tokens a worker has verified until they expire, so a
client that sends the same token with every request costs one HMAC check per token and
worker, not one per request.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from functools import lru_cache

import jwt
from cachetools import TLRUCache
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.core.exceptions import TokenError

ALGORITHM = "HS256"

_password_hash = PasswordHash((Argon2Hasher(),))


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


def decode_access_token(
    token: str, *, secret_key: str, now: float | None = None
) -> tuple[str, float]:
    """``(sub, exp)`` of a valid token: the username, and the expiry in seconds since the epoch.

    PyJWT checks the signature, the algorithm and the claims; the expiry is checked here
    against ``now`` (seconds since the epoch, default the current time), as PyJWT would
    (expired when ``exp <= now``, no leeway), so that a caller's clock decides.

    Raises:
        TokenError: the token is malformed, not HS256 (including ``alg=none``), signed with
            another key, expired, or lacks ``sub``/``exp``.
    """
    try:
        claims = jwt.decode(
            token,
            secret_key,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"], "verify_exp": False},
        )
    except jwt.InvalidTokenError as exc:
        raise TokenError("the token is invalid") from exc
    subject, expiry = claims.get("sub"), claims.get("exp")
    if not (isinstance(subject, str) and subject and isinstance(expiry, int | float)) or isinstance(
        expiry, bool
    ):
        raise TokenError("the token is invalid")
    if expiry <= (time.time() if now is None else now):
        raise TokenError("the token has expired; log in again")
    return subject, float(expiry)


class VerifiedTokens:
    """The subjects of tokens this process has verified, kept until each token's ``exp``.

    A token's validity cannot change while its ``exp`` is ahead: the signature and the
    claims are in the token itself, and the key is fixed for the life of the process. So
    the subject of a token verified once is the answer :func:`decode_access_token` would
    give on every later use of the exact same string, until ``exp``; then the entry expires
    and the token is verified again (and refused as expired). Only valid tokens are kept:
    a malformed, forged or expired one is verified, and refused, every time. Whether the
    user still exists and is active is not part of this: the caller checks that.

    Not thread-safe: for the event loop (``get_current_user`` is ``async``).

    Args:
        secret_key: the signing key of the tokens.
        maxsize: tokens kept at most; the least recently used goes first.
        timer: wall clock, seconds since the epoch (``time.time``; ``exp`` is on it).
    """

    def __init__(
        self, *, secret_key: str, maxsize: int, timer: Callable[[], float] = time.time
    ) -> None:
        self._secret_key = secret_key
        self._timer = timer
        self._subjects: TLRUCache[str, tuple[str, float]] = TLRUCache(
            maxsize=maxsize, ttu=lambda _token, entry, _now: entry[1], timer=timer
        )

    def subject(self, token: str) -> str:
        """The ``sub`` of ``token``, from memory if it was verified before and has not expired.

        Raises:
            TokenError: as :func:`decode_access_token`.
        """
        entry = self._subjects.get(token)
        if entry is None:
            entry = decode_access_token(token, secret_key=self._secret_key, now=self._timer())
            self._subjects[token] = entry
        return entry[0]

    def __len__(self) -> int:
        return len(self._subjects)
