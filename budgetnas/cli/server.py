"""``budgetnas serve``, ``predict``, ``campaign create``, ``device register``: the LUT server and its clients.

Client commands speak REST v1 (docs/rest.md) through :class:`budgetnas.core.http.RestClient`; an
error answer (or no answer) becomes the usual one-line ``error:`` and exit status 2. Heavy imports
(httpx, FastAPI, uvicorn, SQLAlchemy) stay in bodies.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from budgetnas.cli.util import json_object_option

app = typer.Typer(help="The LUT server and its clients.")
campaign_app = typer.Typer(help="Measurement campaigns on the LUT server.", no_args_is_help=True)
device_app = typer.Typer(help="Devices on the LUT server.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
app.add_typer(device_app, name="device")

Server = Annotated[str, typer.Option("--server", help="LUT server base URL, e.g. http://127.0.0.1:8000")]
Token = Annotated[str | None, typer.Option("--token", envvar="BUDGETNAS_TOKEN", help="admin or agent token")]
DEFAULT_VALIDATION_MODELS = 24  # the grouped fit's stages, slope and intercept, with half held out to judge it
AsJson = Annotated[bool, typer.Option("--json", help="print one JSON object")]
# The runner setup of a LUT the server creates (campaign create, device adapt --server): with the
# device, backend and space it is the LUT's identity (db.repo.lut_identity), so both take it alike.
Batch = Annotated[int, typer.Option("--batch", min=1)]
Threads = Annotated[int, typer.Option("--threads", min=0)]
RuntimeVersion = Annotated[str, typer.Option("--runtime-version")]


def call(method: str, server: str, path: str, token: str | None = None, timeout: float = 120.0,
         **kw: Any) -> Any:
    """One REST call; returns the parsed JSON (or text for non-JSON answers)."""
    from budgetnas.core.http import RestClient  # httpx: only for the commands that call the server

    with RestClient(server, token, timeout) as client:
        return client.request(method, path, **kw)


@app.command("serve")
def serve_cmd(
    db: Annotated[str | None, typer.Option("--db", help="database URL (default $BUDGETNAS_DB_URL or "
                                                         "sqlite:///budgetnas.db)")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="uvicorn worker processes")] = 1,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Run the database migrations, then the LUT server under uvicorn."""
    import os

    import uvicorn

    from budgetnas.db.session import migrate
    from budgetnas.lut_server.settings import Settings

    if db:
        os.environ["BUDGETNAS_DB_URL"] = db  # workers build their app from the environment
    settings = Settings()
    migrate(settings.db_url)
    if not settings.admin_token:
        typer.echo("warning: BUDGETNAS_ADMIN_TOKEN is not set; admin calls will be refused", err=True)
    uvicorn.run("budgetnas.lut_server.app:serve_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level)


@app.command("predict")
def predict_cmd(
    archs: Annotated[list[str], typer.Argument(help="architecture strings")],
    server: Server,
    lut: Annotated[int, typer.Option("--lut", help="LUT id")],
    token: Token = None,
    breakdown: Annotated[bool, typer.Option("--breakdown", help="per-block times (with --json)")] = False,
    as_json: AsJson = False,
) -> None:
    """Predicted latency (ms) of each architecture on a LUT, with its error band."""
    out = call("POST", server, "/v1/predict", token, json={"lut": lut, "archs": archs, "breakdown": breakdown})
    if as_json:
        typer.echo(json.dumps(out))
        return
    for p in out["predictions"]:
        flag = "  (transferred)" if p.get("transferred") else ""  # a transfer target's LUT: POST /v1/transfers
        typer.echo(f"{p['latency_ms']:.4f} ms  [{p['low_ms']:.4f}, {p['high_ms']:.4f}]  {p['arch']}{flag}")


def echo_lut_id(summary: str, lut_id: int) -> None:
    """``summary``, then the LUT id alone on the last line: what scripts (the demo) read."""
    typer.echo(summary)
    typer.echo(str(lut_id))


def _space(space: str, width: float | None, resolution: int | None) -> dict[str, Any]:
    from budgetnas.cli.spaces import space_with

    return space_with(space, width, resolution).describe()


@campaign_app.command("create")
def campaign_create_cmd(
    server: Server,
    space: Annotated[str, typer.Option("--space", help="search space, e.g. ofa-mbv3 or nb201")],
    device: Annotated[str, typer.Option("--device", help="registered device name")],
    backend: Annotated[str, typer.Option("--backend", help="runner backend, e.g. ort-cpu")],
    token: Token = None,
    width: Annotated[float | None, typer.Option("--width")] = None,
    resolution: Annotated[int | None, typer.Option("--resolution")] = None,
    batch: Batch = 1,
    threads: Threads = 1,
    runtime_version: RuntimeVersion = "unknown",
    validation_models: Annotated[int, typer.Option(
        "--validation-models", min=0, help="whole models to measure for the calibration, chosen to vary every "
                                           "stage (the demo's 24 by default; 0: none)")] = DEFAULT_VALIDATION_MODELS,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    statistic: Annotated[str | None, typer.Option(
        "--statistic", help="what the LUT sums: median (default), mean, min or p90; a reused LUT keeps its "
                            "own")] = None,
) -> None:
    """Create (or reuse) the LUT and enqueue its missing block keys; prints the LUT id last."""
    body: dict[str, Any] = {"space": _space(space, width, resolution), "device": device, "backend": backend,
                            "batch": batch, "threads": threads, "runtime_version": runtime_version,
                            "validation_models": validation_models, "seed": seed}
    if statistic is not None:  # the server checks it (a 422 names it); left out, a reused LUT keeps its own
        body["statistic"] = statistic
    out = call("POST", server, "/v1/campaigns", token, json=body)
    echo_lut_id(f"jobs created: {out['jobs_created']} (LUT status {out.get('status', '?')})", out["lut_id"])


@device_app.command("register")
def device_register_cmd(
    name: Annotated[str, typer.Option("--name", help="device name")],
    server: Server,
    token: Token = None,
    facts: Annotated[str, typer.Option("--facts", help="JSON object of device facts")] = "{}",
) -> None:
    """Register a device (or rotate its token); prints the new agent token last."""
    parsed = json_object_option(facts, "--facts")
    out = call("POST", server, "/v1/devices", token, json={"name": name, "facts": parsed})
    typer.echo(f"device {out['name']} (id {out['id']}) registered; agent token:")
    typer.echo(out["token"])
