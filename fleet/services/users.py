"""Users, roles and API tokens (stored as SHA-256 hashes, shown once)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from fleet.db.models import ApiToken, User
from fleet.domain import rules
from fleet.domain.errors import Conflict, InvalidInput, NotFound
from fleet.domain.model import SYSTEM, Principal, Role
from fleet.services.common import Clock, audit, utcnow
from fleet.services.views import user_view

TOKEN_PREFIX = "fleet_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput("role", f"{value!r} is not a role; use admin or user") from None


class UserService:
    def __init__(self, session_factory: sessionmaker[Session], clock: Clock = utcnow):
        self._sf = session_factory
        self._clock = clock

    def add(self, name: str, role: str, actor: Principal = SYSTEM) -> tuple[dict[str, Any], str]:
        name = rules.user_name(name)
        r = parse_role(role)
        now = self._clock()
        try:
            with self._sf.begin() as s:
                user = User(name=name, role=r.value, created_at=now)
                s.add(user)
                s.flush()
                token = self._issue(s, user, now)
                audit(
                    s,
                    at=now,
                    actor=actor.name,
                    action="user.add",
                    target=f"user:{name}",
                    detail={"role": r.value},
                )
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists") from None
        return user_view(user), token

    def issue_token(self, name: str, actor: Principal = SYSTEM) -> str:
        now = self._clock()
        with self._sf.begin() as s:
            user = self._get(s, name)
            token = self._issue(s, user, now)
            audit(s, at=now, actor=actor.name, action="token.issue", target=f"user:{user.name}")
        return token

    def revoke_token(self, token_or_id: str, actor: Principal = SYSTEM) -> dict[str, Any]:
        """Revoke by the token itself or by its numeric id (see ``users list``)."""
        now = self._clock()
        with self._sf.begin() as s:
            if token_or_id.startswith(TOKEN_PREFIX):
                tok = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token_or_id)))
            elif token_or_id.isdigit():
                tok = s.get(ApiToken, int(token_or_id))
            else:
                raise InvalidInput(
                    "token", f"give a token ({TOKEN_PREFIX}...) or a token id, got {token_or_id!r}"
                )
            if tok is None:
                raise NotFound("no such token")
            if tok.revoked_at is None:
                tok.revoked_at = now
            user = s.get(User, tok.user_id)
            assert user is not None
            audit(
                s,
                at=now,
                actor=actor.name,
                action="token.revoke",
                target=f"user:{user.name}",
                detail={"token_id": tok.id},
            )
            return {
                "id": tok.id,
                "user": user.name,
                "prefix": tok.prefix,
                "revoked_at": tok.revoked_at.isoformat(),
            }

    def authenticate(self, token: str) -> Principal | None:
        # One indexed lookup per request, deliberately uncached: a revoked
        # token must stop working at once, on every replica.
        with self._sf() as s:
            row = s.execute(
                select(User.id, User.name, User.role)
                .join(ApiToken, ApiToken.user_id == User.id)
                .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
            ).first()
        if row is None:
            return None
        return Principal(user_id=row.id, name=row.name, role=Role(row.role))

    def list(self) -> list[dict[str, Any]]:
        with self._sf() as s:
            users = s.scalars(select(User).order_by(User.name)).all()
            tokens = s.scalars(select(ApiToken).order_by(ApiToken.id)).all()
            by_user: dict[int, list[ApiToken]] = {}
            for t in tokens:
                by_user.setdefault(t.user_id, []).append(t)
            return [user_view(u, by_user.get(u.id, [])) for u in users]

    def set_role(self, name: str, role: str, actor: Principal = SYSTEM) -> dict[str, Any]:
        r = parse_role(role)
        now = self._clock()
        with self._sf.begin() as s:
            user = self._get(s, name)
            user.role = r.value
            audit(
                s,
                at=now,
                actor=actor.name,
                action="user.role",
                target=f"user:{name}",
                detail={"role": r.value},
            )
            return user_view(user)

    def revoke_all_tokens(self, name: str) -> None:
        with self._sf.begin() as s:
            user = self._get(s, name)
            s.execute(
                update(ApiToken)
                .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )

    @staticmethod
    def _get(s: Session, name: str) -> User:
        user = s.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user named {name!r}")
        return user

    @staticmethod
    def _issue(s: Session, user: User, now: Any) -> str:
        token = new_token()
        s.add(ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:12], created_at=now))
        return token
