"""Content-addressed artifacts (exported models): PUT and GET by sha256."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import Response

from db import repo
from lut_server.state import check_read, require_agent, state_of

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
Sha = Path(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256 of the content")


@router.put("/{sha256}", status_code=201)
async def put(request: Request, sha256: str = Sha) -> dict[str, Any]:
    st = state_of(request)
    content = await request.body()
    actual = hashlib.sha256(content).hexdigest()
    if actual != sha256:  # docs/rest.md: 400 (the body, not a field, is wrong)
        raise HTTPException(400, f"sha256: the body hashes to {actual}, not {sha256}")

    def write() -> bool:
        with st.db.session(write=True) as s:
            require_agent(st, request, s)
            return repo.put_artifact(s, sha256, content)

    from starlette.concurrency import run_in_threadpool

    created = await run_in_threadpool(write)
    return {"sha256": sha256, "size": len(content), "created": created}


@router.get("/{sha256}")
def get(request: Request, sha256: str = Sha) -> Response:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        data = repo.get_artifact(s, sha256)
    return Response(data, media_type="application/octet-stream")
