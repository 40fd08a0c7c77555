"""LUTs: create, list, show, entries, export, import, calibrate, validation, campaigns."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from budgetnas.core.errors import ConflictError
from budgetnas.db import repo
from budgetnas.db.models import BACKEND_LEN, NAME_LEN
from budgetnas.lut_server.convert import ImportOptions, import_lut, space_for
from budgetnas.lut_server.params import IdPath, JsonObject, Line, Seed
from budgetnas.lut_server.service import calibrate, enqueue_campaign, lut_model, store_lut, validation
from budgetnas.lut_server.state import check_read, require_admin, state_of
from budgetnas.lut_server.views import LutFileMetaOut, LutOut, StatsOut, lut_object, lut_objects
from budgetnas.luts.calibration import METHODS as CALIBRATION_METHODS
from budgetnas.luts.lut import DEFAULT_STATISTIC, STATISTICS

router = APIRouter(prefix="/v1", tags=["luts"])

Name = Field(min_length=1, max_length=NAME_LEN)
Backend = Field(min_length=1, max_length=BACKEND_LEN)  # the column's length: both databases agree


class LutIn(BaseModel):
    space: JsonObject
    device: Line = Name
    backend: Line = Backend
    batch: int = Field(default=1, ge=1, le=4096)
    threads: int = Field(default=1, ge=0, le=1024)
    runtime_version: Line = Field(default="unknown", min_length=1, max_length=NAME_LEN)
    statistic: Literal["median", "mean", "min", "p90"] | None = Field(
        default=None, description="what predictions sum (default median; a reused LUT keeps its own)")


class ImportIn(BaseModel):
    format: Literal["json", "ofa-yaml", "arch-csv"]
    content: str = Field(min_length=1)
    device: Line | None = Field(default=None, min_length=1, max_length=NAME_LEN)
    backend: Line | None = Field(default=None, min_length=1, max_length=BACKEND_LEN)
    space: JsonObject | None = None
    resolution: int | None = None
    width: float | None = None
    column: Line | None = None
    runtime_version: Line | None = Field(default=None, min_length=1, max_length=NAME_LEN)


class CampaignIn(BaseModel):
    validation_models: int = Field(default=0, ge=0, le=10_000)
    seed: Seed = 0


class LutsOut(TypedDict):
    luts: list[LutOut]


class _Keyed(TypedDict):
    key: str


class EntryOut(_Keyed, StatsOut):
    """An entry: its key first, then its stats (``samples_ms`` with ``?samples=true``)."""


class EntriesOut(TypedDict):
    entries: Annotated[list[EntryOut], Field(description="sorted by key")]


class LutFileOut(TypedDict):
    """The LUT file of ``budgetnas/luts/lut.py`` (``LUT.to_json_dict``), what ``export?format=json`` answers."""

    format: str
    version: int
    meta: LutFileMetaOut
    entries: Annotated[dict[str, StatsOut], Field(description="block key -> its stats, samples included")]
    calibration: dict[str, Any] | None


EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {
    "application/yaml": {"schema": {"type": "string", "description": "format=ofa-yaml: Once-for-All's YAML LUT"}}}}}


class FidelityOut(TypedDict):
    """Relative errors (fractions) of predictions against measurements (``budgetnas.luts.calibration.metrics``)."""

    mape: float
    rmspe: float
    within_5pct: float
    within_10pct: float
    kendall_tau: float | None  # null when either side is constant


class HoldoutOut(TypedDict):
    n_fit: int
    n_held_out: int
    folds: int
    raw: FidelityOut
    calibrated: FidelityOut


class ReferencesOut(TypedDict):
    lut: float | None
    models: float | None


class SessionsOut(TypedDict):
    reference_ms: ReferencesOut
    session_ratio: float | None
    models_with_reference: int
    sessions_corrected: bool


class CalibrateOut(TypedDict):
    id: int
    calibration: Annotated[dict[str, Any], Field(description="budgetnas.luts.lut.Calibration.to_dict()")]
    method: Literal["grouped", "affine"]
    holdout: Annotated[HoldoutOut | None, Field(description="k-fold cross-validated: each model judged by the "
                                                            "same fit made without its fold (null when it "
                                                            "could not be made: see holdout_error)")]
    holdout_error: str | None
    sessions: SessionsOut


class ValidationModelOut(TypedDict):
    arch: str
    measured_ms: float
    corrected_ms: Annotated[float, Field(description="measured_ms on the LUT session's scale (divided by the "
                                                     "session ratio when every model and the LUT timed the "
                                                     "reference workload), as /calibrate fits by default")]
    raw_ms: float
    predicted_ms: float


class ValidationOut(TypedDict):
    models: Annotated[list[ValidationModelOut], Field(description="measured whole models beside their predictions")]
    sessions: SessionsOut | None


class CampaignOut(TypedDict):
    lut_id: int
    jobs_created: int
    status: Annotated[str, Field(description="the LUT's: building or complete")]


assert set(STATISTICS) == {"median", "mean", "min", "p90"}  # keep LutIn.statistic in step with budgetnas.luts.lut


@router.post("/luts", status_code=201, response_model=LutOut)
def create_lut(body: LutIn, request: Request) -> dict[str, Any]:
    st = state_of(request)
    require_admin(st, request)
    space = space_for(body.space)
    with st.db.session(write=True) as s:
        dev = repo.get_device(s, body.device)
        lut = repo.create_lut(s, device=dev, backend=body.backend, batch=body.batch, threads=body.threads,
                              runtime_version=body.runtime_version, space=space.describe(),
                              statistic=body.statistic or DEFAULT_STATISTIC,
                              n_keys=len(space.all_block_keys()), meta={"source": "campaign"})
        return lut_object(s, lut)


@router.get("/luts", response_model=LutsOut)
def list_luts(request: Request) -> dict[str, Any]:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        return {"luts": lut_objects(s, repo.list_luts(s))}


@router.get("/luts/{lut_id}", response_model=LutOut)
def show_lut(lut_id: IdPath, request: Request) -> dict[str, Any]:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        return lut_object(s, repo.get_lut(s, lut_id))


@router.get("/luts/{lut_id}/entries", response_model=EntriesOut)
def entries(lut_id: IdPath, request: Request, samples: bool = False) -> dict[str, Any]:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        repo.get_lut(s, lut_id)
        rows = repo.lut_entries(s, lut_id, samples=samples)
    return {"entries": [{"key": k, **v} for k, v in rows.items()]}


@router.get("/luts/{lut_id}/export", response_model=LutFileOut, responses=EXPORT_RESPONSES)
def export(lut_id: IdPath, request: Request, format: Literal["json", "ofa-yaml"] = Query("json")) -> Response:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        lut = lut_model(s, lut_id, samples=format == "json")
    if format == "json":
        return Response(lut.to_json_text(samples=True), media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="lut-{lut_id}.json"'})
    return Response(lut.to_ofa_yaml(), media_type="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="lut-{lut_id}.yaml"'})


@router.post("/luts/import", status_code=201, response_model=LutOut)
def import_(body: ImportIn, request: Request) -> dict[str, Any]:
    st = state_of(request)
    require_admin(st, request)
    opts = ImportOptions(device=body.device, backend=body.backend, space=body.space, resolution=body.resolution,
                         width=body.width, column=body.column, runtime_version=body.runtime_version)
    imported = import_lut(body.format, body.content, opts)
    with st.db.session(write=True) as s:
        lut = store_lut(s, imported.lut, imported.measurements, source=body.format)
        return lut_object(s, lut)


class CalibrateIn(BaseModel):
    """The fit (``budgetnas.luts.calibration``); the seed deals the models into the held-out figures' folds."""

    method: Literal["grouped", "affine"] = "grouped"
    seed: Seed = 0
    correct_sessions: bool = True  # divide the models' times by their session's reference ratio to the LUT's


assert set(CALIBRATION_METHODS) == {"grouped", "affine"}  # keep CalibrateIn.method in step with the fit's registry


@router.post("/luts/{lut_id}/calibrate", response_model=CalibrateOut)
def calibrate_lut(lut_id: IdPath, request: Request, body: CalibrateIn | None = None) -> dict[str, Any]:
    st = state_of(request)
    require_admin(st, request)
    opts = body or CalibrateIn()
    with st.db.session(write=True) as s:
        return {"id": lut_id, **calibrate(st, s, lut_id, opts.method, opts.seed, opts.correct_sessions)}


@router.get("/luts/{lut_id}/validation", response_model=ValidationOut)
def validation_models(lut_id: IdPath, request: Request) -> dict[str, Any]:
    st = state_of(request)
    check_read(st, request)
    with st.db.session() as s:
        return validation(st, s, lut_id)


class CampaignCreateIn(LutIn, CampaignIn):
    """A LUT (created, or the building one reused) and its campaign in one request."""


@router.post("/campaigns", status_code=201, response_model=CampaignOut)
def create_campaign(body: CampaignCreateIn, request: Request) -> dict[str, Any]:
    """Create (or reuse) the LUT of this identity and enqueue its missing keys."""
    st = state_of(request)
    require_admin(st, request)
    space = space_for(body.space)
    desc = space.describe()
    with st.db.session(write=True) as s:
        dev = repo.get_device(s, body.device)
        ident = repo.lut_identity(dev.name, body.backend, body.batch, body.threads, body.runtime_version, desc)
        lut = repo.find_lut(s, ident)
        if lut is None:
            try:
                lut = repo.create_lut(s, device=dev, backend=body.backend, batch=body.batch, threads=body.threads,
                                      runtime_version=body.runtime_version, space=desc,
                                      statistic=body.statistic or DEFAULT_STATISTIC,
                                      n_keys=len(space.all_block_keys()), meta={"source": "campaign"})
            except ConflictError:  # a concurrent campaign created it first: reuse it
                lut = repo.find_lut(s, ident)
                assert lut is not None
        if body.statistic is not None and body.statistic != lut.statistic:
            # its entries are already that statistic's; mixing would make one LUT sum two kinds of number
            raise ConflictError(f"statistic {body.statistic!r}: LUT {lut.id} of this identity sums "
                                f"{lut.statistic!r}; leave statistic out to add to it")
        n = enqueue_campaign(s, lut, body.validation_models, body.seed)
        return {"lut_id": lut.id, "jobs_created": n, "status": lut.status}


@router.post("/luts/{lut_id}/campaign", status_code=201, response_model=CampaignOut)
def lut_campaign(lut_id: IdPath, request: Request, body: CampaignIn | None = None) -> dict[str, Any]:
    st = state_of(request)
    require_admin(st, request)
    body = body or CampaignIn(validation_models=0, seed=0)
    with st.db.session(write=True) as s:
        lut = repo.get_lut(s, lut_id, lock=True)
        return {"lut_id": lut.id, "jobs_created": enqueue_campaign(s, lut, body.validation_models, body.seed),
                "status": lut.status}
