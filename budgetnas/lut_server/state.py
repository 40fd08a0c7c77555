"""What one app instance holds: settings, the database, caches and metrics (no request state)."""

from __future__ import annotations

import hmac
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from budgetnas.core.errors import AuthError, PermissionDeniedError
from budgetnas.db import repo
from budgetnas.db.models import Device
from budgetnas.db.session import Database
from budgetnas.lut_server.metrics import Metrics
from budgetnas.lut_server.predictor import PredictorCache
from budgetnas.lut_server.settings import Settings


@dataclass
class AppState:
    settings: Settings
    db: Database
    predictors: PredictorCache
    metrics: Metrics = field(default_factory=Metrics)
    # checkpoint id -> (sha256, bundle), least recently used first; bounded (routes/checkpoints.py)
    generators: OrderedDict[int, tuple[str, Any]] = field(default_factory=OrderedDict)
    generator_lock: threading.Lock = field(default_factory=threading.Lock)


def state_of(request: Request) -> AppState:
    st: AppState = request.app.state.budgetnas
    return st


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("authorization: expected 'Bearer <token>'")
    return token.strip()


def is_admin(st: AppState, token: str | None) -> bool:
    admin = st.settings.admin_token
    return bool(token and admin and hmac.compare_digest(token.encode(), admin.encode()))


def require_admin(st: AppState, request: Request) -> None:
    token = bearer(request)
    if token is None:
        raise AuthError("authorization: this call needs the admin token (Authorization: Bearer ...)")
    if not st.settings.admin_token:
        raise AuthError("authorization: no admin token is configured on this server (BUDGETNAS_ADMIN_TOKEN)")
    if not is_admin(st, token):
        raise AuthError("authorization: the token is not the admin token")


def require_agent(st: AppState, request: Request, s: Session, device_name: str | None = None) -> Device | None:
    """The device whose agent token was sent (None for the admin token, which may act for any device)."""
    token = bearer(request)
    if token is None:
        raise AuthError("authorization: this call needs an agent or admin token (Authorization: Bearer ...)")
    if is_admin(st, token):
        return None
    dev = repo.device_for_token(s, repo.token_hash(token))
    if dev is None:
        raise AuthError("authorization: unknown or rotated agent token")
    if device_name is not None and dev.name != device_name:
        raise PermissionDeniedError(f"device: this agent token belongs to device {dev.name!r}, not {device_name!r}")
    return dev


def admin_first(request: Request) -> None:
    """Dependency of upload routes: the admin token, checked before the body is read (budgetnas.lut_server.uploads)."""
    require_admin(state_of(request), request)


def agent_first(request: Request) -> Device | None:
    """Dependency of upload routes: an agent (or admin) token, checked before the body is read."""
    st = state_of(request)
    with st.db.session() as s:
        return require_agent(st, request, s)


def check_read(st: AppState, request: Request) -> None:
    """Reads are open unless BUDGETNAS_READS_REQUIRE_TOKEN; then any admin or agent token will do."""
    if not st.settings.reads_require_token:
        return
    token = bearer(request)
    if token is None:
        raise AuthError("authorization: reads need a token on this server")
    if is_admin(st, token):
        return
    with st.db.session() as s:
        if repo.device_for_token(s, repo.token_hash(token)) is None:
            raise AuthError("authorization: unknown or rotated token")
