"""Users, roles and API tokens (stored as SHA-256 hashes, shown once)."""

from __future__ import annotations

import hashlib
import secrets
import time
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
# Entries before the authentication cache starts over (bounds its memory).
_AUTH_CACHE_MAX = 10_000


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
    def __init__(
        self, session_factory: sessionmaker[Session], clock: Clock = utcnow, *, auth_cache_s: float = 2.0
    ):
        self._sf = session_factory
        self._clock = clock
        self.auth_cache_s = auth_cache_s
        self._auth_cache: dict[str, tuple[float, Principal]] = {}
        self._auth_generation = 0

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
            out = {
                "id": tok.id,
                "user": user.name,
                "prefix": tok.prefix,
                "revoked_at": tok.revoked_at.isoformat(),
            }
        # After the commit: a lookup between the change and its commit would
        # otherwise cache the old answer again.
        self._forget_sessions()
        return out

    def authenticate(self, token: str) -> Principal | None:
        """One indexed lookup, uncached: a revoked token fails at once."""
        with self._sf() as s:
            row = s.execute(
                select(User.id, User.name, User.role)
                .join(ApiToken, ApiToken.user_id == User.id)
                .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
            ).first()
        if row is None:
            return None
        return Principal(user_id=row.id, name=row.name, role=Role(row.role))

    def authenticate_cached(self, token: str) -> Principal | None:
        """``authenticate`` with answers remembered for ``auth_cache_s`` seconds.

        The API calls this on every request; the lookup was a tenth of a lease
        operation's cost. A token revoked or a role changed through this
        process takes effect at once (the cache is cleared); through another
        replica or the CLI, within ``auth_cache_s``. Unknown tokens are never
        cached, so the cache cannot be filled by guessing.
        """
        if self.auth_cache_s <= 0:
            return self.authenticate(token)
        hit = self.cached_principal(token)
        if hit is not None:
            return hit
        key = hash_token(token)
        now = time.monotonic()
        generation = self._auth_generation
        principal = self.authenticate(token)
        if principal is not None and generation == self._auth_generation:
            if len(self._auth_cache) >= _AUTH_CACHE_MAX:
                self._auth_cache.clear()
            self._auth_cache[key] = (now + self.auth_cache_s, principal)
        return principal

    def cached_principal(self, token: str) -> Principal | None:
        """The cached answer for ``token`` if still fresh; never touches the database."""
        hit = self._auth_cache.get(hash_token(token))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def _forget_sessions(self) -> None:
        # Called after the change commits. The generation stops a lookup
        # that read the old state before the commit from caching it now.
        self._auth_generation += 1
        self._auth_cache.clear()

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
            out = user_view(user)
        self._forget_sessions()
        return out

    def revoke_all_tokens(self, name: str) -> None:
        with self._sf.begin() as s:
            user = self._get(s, name)
            s.execute(
                update(ApiToken)
                .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
        self._forget_sessions()

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
