"""Prediction: sum of block entries (then calibration) for 1..max_archs architectures."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from budgetnas.core.errors import InvalidArgumentError, MissingKeysError
from budgetnas.lut_server.params import IdField
from budgetnas.lut_server.predictor import Prepared
from budgetnas.lut_server.service import prepared_fresh
from budgetnas.lut_server.state import AppState, check_read, state_of
from budgetnas.lut_server.transfer import transferred_predictions
from budgetnas.lut_server.uploads import json_body, json_body_schema

router = APIRouter(prefix="/v1", tags=["predict"])


class PredictIn(BaseModel):
    lut: IdField
    archs: list[str] = Field(min_length=1)
    breakdown: bool = False
    calibrated: bool = True


class Block(BaseModel):
    key: str
    ms: float


class PredictionOut(BaseModel):
    arch: str
    latency_ms: float
    low_ms: float
    high_ms: float
    raw_ms: float
    blocks: list[Block] | None = None
    # a transfer target's LUT (POST /v1/transfers) that its own entries do not cover yet
    transferred: bool | None = None
    method: str | None = None
    sources: list[int] | None = None


class PredictOut(BaseModel):
    predictions: list[PredictionOut]


INLINE_ARCHS = 32  # small requests on a fresh in-memory LUT are answered on the event loop


def _answer(st: AppState, body: PredictIn, prep: Prepared | None = None) -> bytes:
    prep = prep or prepared_fresh(st, body.lut)
    if not body.breakdown:
        return prep.encoded(body.archs, calibrated=body.calibrated)
    preds = prep.predict(body.archs, calibrated=body.calibrated, breakdown=True)
    # serialised here: FastAPI's generic encoder costs more than the prediction for 10k archs
    return orjson.dumps({"predictions": preds})


def _transferred(st: AppState, body: PredictIn, missing: MissingKeysError) -> bytes:
    """A LUT whose entries lack the archs' keys: its transfer answers if it is a transfer target."""
    with st.db.session() as s:
        preds = transferred_predictions(s, body.lut, body.archs)
    if preds is None:
        raise missing
    return orjson.dumps({"predictions": preds})


def _json_media(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _body(raw: bytes, content_type: str | None) -> PredictIn:
    """The request body as FastAPI would read it (JSON media type, the same 422 locations), without its
    per-request dependency machinery: on a warm single-arch predict that machinery cost more than the answer."""
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if not _json_media(content_type):
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",), "input": None,
                                       "msg": "Input should be a valid dictionary or object to extract fields from"}])
    return json_body(raw, PredictIn)  # what FastAPI accepts, with its model messages (json_body)


PREDICT_BODY = json_body_schema(PredictIn)["requestBody"]


@router.post("/predict", response_model=PredictOut, openapi_extra={"requestBody": PREDICT_BODY})
async def predict(request: Request) -> Response:
    st = state_of(request)
    body = _body(await request.body(), request.headers.get("content-type"))
    if st.settings.reads_require_token:
        await run_in_threadpool(check_read, st, request)
    if len(body.archs) > st.settings.max_archs:
        raise InvalidArgumentError(
            f"archs: {len(body.archs)} architectures; at most {st.settings.max_archs} per request")
    prep = st.predictors.fresh(body.lut) if len(body.archs) <= INLINE_ARCHS else None
    try:
        if prep is not None:
            data = _answer(st, body, prep)  # microseconds: cheaper than a hop to the thread pool
        else:
            data = await run_in_threadpool(_answer, st, body)
    except MissingKeysError as exc:  # a transfer target (POST /v1/transfers) answers until its entries cover
        data = await run_in_threadpool(_transferred, st, body, exc)
    return Response(data, media_type="application/json")


predict.body_model = PredictIn  # type: ignore[attr-defined]  # read by _body, not FastAPI: the hostile tests walk it
