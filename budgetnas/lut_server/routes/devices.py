"""Devices: register (returns an agent token once; stored hashed), list, heartbeat."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from budgetnas.core.jsonlimits import check_json
from budgetnas.db import repo
from budgetnas.db.models import NAME_LEN
from budgetnas.lut_server.params import JsonObject, Line
from budgetnas.lut_server.state import check_read, require_admin, require_agent, state_of
from budgetnas.lut_server.views import DeviceOut, device_object

router = APIRouter(prefix="/v1/devices", tags=["devices"])
DeviceName = Annotated[Line, Path(min_length=1, max_length=NAME_LEN)]


class DeviceIn(BaseModel):
    name: Line = Field(min_length=1, max_length=NAME_LEN, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
    facts: JsonObject = Field(default_factory=dict)


class HeartbeatIn(BaseModel):
    facts: JsonObject | None = None


class RegisteredOut(DeviceOut):
    token: Annotated[str, Field(description="the agent token, shown once (stored hashed)")]


class DevicesOut(TypedDict):
    devices: list[DeviceOut]


class HeartbeatOut(TypedDict):
    name: str
    last_heartbeat: str | None


@router.post("", status_code=201, response_model=RegisteredOut)
def register(body: DeviceIn, request: Request) -> dict[str, Any]:
    st = state_of(request)
    require_admin(st, request)
    token = "bna_" + secrets.token_urlsafe(32)
    with st.db.session(write=True) as s:
        dev = repo.register_device(s, body.name, body.facts, repo.token_hash(token))
        return {**device_object(dev), "token": token}


@router.get("", response_model=DevicesOut)
def list_devices(request: Request) -> dict[str, Any]:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        return {"devices": [device_object(d) for d in repo.list_devices(s)]}


@router.post("/{name}/heartbeat", response_model=HeartbeatOut)
def heartbeat(name: DeviceName, request: Request, body: HeartbeatIn | None = None) -> dict[str, Any]:
    st = state_of(request)
    with st.db.session(write=True) as s:
        require_agent(st, request, s, device_name=name)
        dev = repo.get_device(s, name)
        facts = body.facts if body else None
        if facts is not None:  # merged into the stored facts: the sum must stay bounded too
            check_json({**dev.facts, **facts}, "facts (merged with the stored facts)")
        dev = repo.device_heartbeat(s, dev, facts)
        return {"name": dev.name, "last_heartbeat": repo.iso(dev.last_heartbeat)}
