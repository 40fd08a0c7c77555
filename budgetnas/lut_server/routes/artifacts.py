"""Content-addressed artifacts (exported models): PUT and GET by sha256."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from budgetnas.db import repo
from budgetnas.lut_server.state import agent_first, check_read, state_of
from budgetnas.lut_server.uploads import BINARY_BODY, read_body

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
Sha = Path(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256 of the content")


class ArtifactOut(TypedDict):
    sha256: str
    size: Annotated[int, Field(description="bytes")]
    created: Annotated[bool, Field(description="false when the content was already stored")]


BYTES: dict[int | str, dict[str, Any]] = {200: {"content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.put("/{sha256}", status_code=201, dependencies=[Depends(agent_first)], openapi_extra=BINARY_BODY,
            response_model=ArtifactOut)
async def put(request: Request, sha256: str = Sha) -> dict[str, Any]:
    st = state_of(request)
    content, actual = await read_body(request)  # only once the token was accepted
    if actual != sha256:  # docs/rest.md: 400 (the body, not a field, is wrong)
        raise HTTPException(400, f"sha256: the body hashes to {actual}, not {sha256}")

    def write() -> bool:
        with st.db.session(write=True) as s:
            return repo.put_artifact(s, sha256, content)

    created = await run_in_threadpool(write)
    return {"sha256": sha256, "size": len(content), "created": created}


@router.get("/{sha256}", response_class=Response, responses=BYTES)
def get(request: Request, sha256: str = Sha) -> Response:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        data = repo.get_artifact(s, sha256)
    return Response(data, media_type="application/octet-stream")
