"""Large request bodies, read only after the caller is authenticated.

FastAPI reads a declared body parameter before it solves any dependency, so the routes that take
uploads (artifacts, checkpoints) declare none: their auth dependency (``state.admin_first`` /
``state.agent_first``) runs first, then the body is streamed here. Its size is bounded on the stream
itself by ``app.BodyLimit`` (``BUDGETNAS_MAX_UPLOAD_BYTES``; 413 past it).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

# the OpenAPI request bodies of routes that read their body themselves
BINARY_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def read_body(request: Request) -> tuple[bytes, str]:
    """The whole body, streamed chunk by chunk, and its sha256 (hex)."""
    digest, parts = hashlib.sha256(), []
    async for chunk in request.stream():
        digest.update(chunk)
        parts.append(chunk)
    return b"".join(parts), digest.hexdigest()


def json_body(raw: bytes, model: type[M]) -> M:
    """``raw`` parsed into ``model``; errors as FastAPI's own body errors (the app's 422 handler).

    orjson reads what it can (strict UTF-8 JSON: a sixth of the stdlib's time on a predict body);
    anything it refuses goes through the stdlib's parser, which FastAPI uses, so what is accepted and
    every error message stay FastAPI's."""
    try:
        return _validated(orjson.loads(raw), model)
    except orjson.JSONDecodeError:
        pass
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": exc.msg}}]) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error",
                                       "input": {}, "ctx": {"error": type(exc).__name__}}]) from None
    return _validated(data, model)


def _validated(data: Any, model: type[M]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
