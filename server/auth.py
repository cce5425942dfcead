"""Lab users and their API tokens.

lavacli authenticates with ``http://USER:TOKEN@host/RPC2`` (``authenticate``),
LAVA's REST API with ``Authorization: Token <secret>`` (``user_for_token``).
A token's secret is ``secrets.token_urlsafe(32)`` (256 random bits), shown
once when it is made; the database keeps only a salted scrypt hash of it and
a non-secret lookup key (the first 16 hex digits of its SHA-256), so finding
a token is one index lookup and a stolen database gives no usable token.
The hash is compared in constant time. Names follow LAVA's (Django's) rule.

Remote tokens are the other kind, LAVA's "remote artifact tokens": secrets a
user hands the lab so it can present them elsewhere (a notify callback's
``token: NAME``). They must be sent as given, so they are stored as given.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db import session
from server.models import RemoteToken, Token, User

NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,150}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # 16 MiB and tens of ms a hash: costly per guess
VERIFIED_SECONDS = 60.0
VERIFIED_MAX = 4096
_DUMMY_HASH: str | None = None
# Tokens this process verified lately, so an API client does not pay scrypt on every request:
# SHA-256 of the secret -> (token id, its stored hash, until). Memory only; the token row is still
# looked up each time, so a deleted token stops working at once.
_verified: dict[str, tuple[int, str, float]] = {}
_verified_lock = threading.Lock()


class UserExists(ValueError):
    pass


class UnknownUser(LookupError):
    pass


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{name!r} is not a valid user name (1-150 letters, digits and _.@+-)")
    return name


def _lookup(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64): the parameters travel with the hash, so they can change later."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def add_user(name: str, admin: bool = False, *, engine: Engine | None = None) -> User:
    """Creates a user; refuses a name that exists (``UserExists``) or is not valid (ValueError)."""
    check_name(name)
    try:
        with session(engine, write=True) as s:
            user = User(username=name, is_admin=admin)
            s.add(user)
    except IntegrityError:
        raise UserExists(f"the user {name} already exists") from None
    return user


def get_user(name: str, *, engine: Engine | None = None) -> User | None:
    with session(engine) as s:
        return s.execute(select(User).where(User.username == name)).scalar_one_or_none()


def list_users(*, engine: Engine | None = None) -> list[User]:
    with session(engine) as s:
        return list(s.execute(select(User).order_by(User.username)).scalars())


def _user(s: Session, user: str) -> User:
    """The user named ``user`` in this session, or UnknownUser."""
    owner = s.execute(select(User).where(User.username == user)).scalar_one_or_none()
    if owner is None:
        raise UnknownUser(f"no user {user}")
    return owner


def add_token(user: str, description: str = "", *, engine: Engine | None = None) -> str:
    """Makes a token for ``user`` and returns its secret: the only time it is ever available."""
    secret = secrets.token_urlsafe(32)
    stored = hash_secret(secret)
    with session(engine, write=True) as s:
        owner = _user(s, user)
        s.add(Token(user_id=owner.id, description=description or "", lookup=_lookup(secret), secret_hash=stored))
    return secret


def list_tokens(user: str, *, engine: Engine | None = None) -> list[Token]:
    """The user's tokens (id, description, created; never a secret), oldest first."""
    with session(engine) as s:
        owner = _user(s, user)
        return list(s.execute(select(Token).where(Token.user_id == owner.id).order_by(Token.id)).scalars())


def delete_token(user: str, token_id: int, *, engine: Engine | None = None) -> bool:
    """Deletes the user's token ``token_id``; False when the user has no such token."""
    with session(engine, write=True) as s:
        owner = _user(s, user).id
        done = s.execute(delete(Token).where(Token.id == token_id, Token.user_id == owner))
        return bool(getattr(done, "rowcount", 0))


def add_remote_token(user: str, name: str, secret: str, *, engine: Engine | None = None) -> None:
    """Stores (or replaces) the user's remote token ``name``: a secret a notify callback sends as it is."""
    if not isinstance(name, str) or not 1 <= len(name) <= 200 or not name.isprintable():
        raise ValueError(f"{name!r} is not a token name (1-200 printable characters)")
    if not isinstance(secret, str) or not secret or len(secret) > 4096 or any(c in secret for c in "\r\n\0"):
        raise ValueError("a remote token's secret is one line of 1-4096 characters")
    with session(engine, write=True) as s:
        owner = _user(s, user)
        s.execute(delete(RemoteToken).where(RemoteToken.user_id == owner.id, RemoteToken.name == name))
        s.add(RemoteToken(user_id=owner.id, name=name, secret=secret))


def remote_secret(user: str, name: str, *, engine: Engine | None = None) -> str | None:
    """The secret of the user's remote token ``name``, or None."""
    with session(engine) as s:
        return s.execute(select(RemoteToken.secret).join(User, User.id == RemoteToken.user_id)
                         .where(User.username == user, RemoteToken.name == name)).scalar_one_or_none()


def list_remote_tokens(user: str, *, engine: Engine | None = None) -> list[RemoteToken]:
    """The user's remote tokens, by name (their secrets are loaded but callers print names only)."""
    with session(engine) as s:
        owner = _user(s, user).id
        return list(s.execute(select(RemoteToken).where(RemoteToken.user_id == owner)
                              .order_by(RemoteToken.name)).scalars())


def delete_remote_token(user: str, name: str, *, engine: Engine | None = None) -> bool:
    with session(engine, write=True) as s:
        owner = _user(s, user).id
        done = s.execute(delete(RemoteToken).where(RemoteToken.user_id == owner, RemoteToken.name == name))
        return bool(getattr(done, "rowcount", 0))


def user_for_token(secret: str, *, engine: Engine | None = None) -> User | None:
    """The user a token secret belongs to (REST's ``Authorization: Token``), or None."""
    if not isinstance(secret, str) or not secret or len(secret) > 256:
        return None
    with session(engine) as s:
        rows = s.execute(select(Token.id, Token.secret_hash, User).join(User, User.id == Token.user_id)
                         .where(Token.lookup == _lookup(secret))).all()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    now = time.monotonic()
    with _verified_lock:
        known = _verified.get(digest)
    for token_id, stored, user in rows:
        if known is not None and known[:2] == (token_id, stored) and known[2] > now:
            return user
        if verify_secret(secret, stored):
            with _verified_lock:
                if len(_verified) >= VERIFIED_MAX:
                    _verified.clear()
                _verified[digest] = (token_id, stored, now + VERIFIED_SECONDS)
            return user
    # As slow without a match as with one: timing does not tell whether a lookup key exists.
    verify_secret(secret, _dummy_hash())
    return None


def authenticate(user: str, secret: str, *, engine: Engine | None = None) -> User | None:
    """The user when ``secret`` is one of their tokens (lavacli's ``USER:TOKEN``), else None."""
    found = user_for_token(secret, engine=engine)
    return found if found is not None and hmac.compare_digest(found.username.encode(), user.encode()) else None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_secret(secrets.token_urlsafe(32))
    return _DUMMY_HASH
