"""Users: creation, password hashing (argon2) and sign-in."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecotaxa_core.db.models import User
from ecotaxa_core.errors import EcoTaxaError, UserNotFound

__all__ = ["create_user", "authenticate", "get_user_by_email", "find_annotator",
           "create_annotator", "first_admin", "user_for_cli"]

_hasher = PasswordHasher()


def create_user(session: Session, email: str, name: str, password: str | None = None,
                is_admin: bool = False) -> User:
    email = email.strip().lower()
    if not email:
        raise EcoTaxaError("a user needs an e-mail address")
    if session.scalar(select(User).where(User.email == email)) is not None:
        raise EcoTaxaError(f"a user with e-mail {email!r} already exists")
    user = User(email=email, name=name, is_admin=is_admin,
                password_hash=_hasher.hash(password) if password else None)
    session.add(user)
    session.flush()
    return user


def get_user_by_email(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise UserNotFound(f"no user with e-mail {email!r}")
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with these credentials, or None."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not user.active or not user.password_hash:
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


def find_annotator(session: Session, name: str | None, email: str | None) -> User | None:
    """The user an imported annotation names: by e-mail, then by name (ignoring case).

    None when nothing matches, or when the name alone matches several users.
    """
    name = (name or "").strip()
    email = (email or "").strip().lower()
    if email:
        user = session.scalar(select(User).where(func.lower(User.email) == email))
        if user is not None:
            return user
    if name:
        users = session.scalars(select(User).where(func.lower(User.name) == name.lower())
                                .limit(2)).all()
        if len(users) == 1:
            return users[0]
    return None


def create_annotator(session: Session, name: str | None, email: str | None) -> User:
    """A user for an annotator of imported data, without a password: they cannot sign in.

    Without an e-mail they get ``<name>@imported.invalid`` (an address that cannot
    exist), so who classified an object is never lost.
    """
    name = (name or "").strip()
    email = (email or "").strip().lower()
    if not name and not email:
        raise EcoTaxaError("an annotator needs a name or an e-mail address")
    email = email or f"{name.lower().replace(' ', '.')}@imported.invalid"
    user = session.scalar(select(User).where(func.lower(User.email) == email))
    if user is None:
        user = User(email=email, name=name or email, password_hash=None)
        session.add(user)
        session.flush()
    return user


def first_admin(session: Session) -> User:
    """The oldest active administrator: who the command line acts as by default."""
    user = session.scalar(select(User).where(User.is_admin.is_(True), User.active.is_(True))
                          .order_by(User.id))
    if user is None:
        raise UserNotFound("the instance has no administrator; run `ecotaxa init`")
    return user


def user_for_cli(session: Session, email: str | None) -> User:
    """The user named by e-mail, or the first administrator when none is named."""
    return get_user_by_email(session, email) if email else first_admin(session)
