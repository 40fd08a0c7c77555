"""``budgetnas device adapt``: a new device's latency for every arch, from the fleet plus N measurements.

Offline, from per-arch tables (``--latency-table``, the format ``train --latency-table`` reads):

1. without ``--measured``: choose the ``--measure N`` archs that inform the transfer most
   (``budgetnas.luts.transfer.choose_archs``) and print them, one per line (``--out plan.csv`` writes them with
   an empty ``<device>`` column to fill in with the measured milliseconds);
2. with ``--measured CSV:COLUMN``: fit the transfer (``budgetnas.luts.transfer.fit``) and write every arch's
   predicted latency and band to ``--out`` (CSV: ``arch_str,latency_ms,low_ms,high_ms``), which
   ``budgetnas train --latency-table OUT:latency_ms`` trains the generator on.

With ``--server URL --token ADMIN --backend B``, ``--from`` names source LUT ids: ``POST /v1/transfers`` creates
the new device's LUT as a transfer target with the N whole-model jobs for its agent; ``POST /v1/predict`` on it
then answers from the transfer (``budgetnas.lut_server.transfer``) until measured entries cover the archs.

The command is mounted on the ``device`` group of ``budgetnas.cli.server`` (see ``budgetnas.cli.main``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from budgetnas.cli.server import Batch, RuntimeVersion, Threads, device_app
from budgetnas.core.errors import DataFileError, InvalidArgumentError

app = typer.Typer()  # no commands of its own: importing the module mounts ``device adapt``

From = Annotated[str, typer.Option("--from", help="source devices (table columns), comma-separated")]
Tables = Annotated[list[Path] | None, typer.Option(
    "--latency-table", help="per-arch latency CSV holding the source columns (repeatable)")]


def _sources(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise InvalidArgumentError("--from: name at least one source device")
    return names


def _measured(spec: str, space: Any, rows: dict[tuple[int, ...], int]) -> tuple[list[int], list[float]]:
    from budgetnas.generator.tables import read_table

    t = read_table(spec, space).present()
    idx, ms, unknown = [], [], []
    for tok, v in zip(t.tokens, t.values, strict=True):
        key = tuple(int(x) for x in tok)
        if key not in rows:
            unknown.append(space.format(space.from_tokens(list(key))))
            continue
        idx.append(rows[key])
        ms.append(float(v))
    if unknown:
        raise DataFileError(f"--measured: {len(unknown)} arch(s) none of the sources has, e.g. {unknown[0]}")
    if not idx:
        raise DataFileError(f"--measured {spec}: no measured latency")
    return idx, ms


def _on_server(server: str, token: str | None, device: str, backend: str | None, names: list[str],
               measure: int | None, selection: str, seed: int, batch: int, threads: int, runtime_version: str,
               as_json: bool) -> None:
    from budgetnas.cli.server import call, echo_lut_id

    if not all(n.isascii() and n.isdigit() and len(n) <= 10 for n in names):
        raise InvalidArgumentError(f"--from: with --server, the source LUT ids, e.g. 3,4,7; got {','.join(names)}")
    if backend is None:
        raise InvalidArgumentError("--backend: with --server, the new device's backend (its agent's), e.g. ort-cpu")
    if measure is None:
        raise InvalidArgumentError("--measure N: how many whole models the new device's agent measures")
    body = {"device": device, "backend": backend, "sources": [int(n) for n in names], "measure": measure,
            "selection": selection, "seed": seed, "batch": batch, "threads": threads,
            "runtime_version": runtime_version}
    out = call("POST", server, "/v1/transfers", token, json=body)
    if as_json:
        typer.echo(json.dumps(out))
        return
    echo_lut_id(f"{out['jobs_created']} whole-model job(s) for {device}'s agent; once 2 or more are measured, "
                f"POST /v1/predict on LUT {out['lut_id']} answers from the transfer. LUT id:", out["lut_id"])


@device_app.command("adapt")
def adapt_cmd(
    device: Annotated[str, typer.Option("--device", help="the new device")],
    sources: From,
    latency_table: Tables = None,
    measure: Annotated[int | None, typer.Option("--measure", help="archs to measure on the new device")] = None,
    measured: Annotated[str | None, typer.Option(
        "--measured", help="the new device's measured archs, CSV:COLUMN (ms); without it the archs to measure "
                           "are chosen and printed")] = None,
    space: Annotated[str, typer.Option("--space", help="search space of the tables")] = "nb201",
    method: Annotated[str, typer.Option("--method", help="fleet-ensemble (default), fleet-bma, nearest, ridge or "
                                                          "nnls")] = "fleet-ensemble",
    selection: Annotated[str, typer.Option("--selection", help="dopt (default), iopt or random")] = "dopt",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="CSV: the plan, or every arch's prediction")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON summary")] = False,
    server: Annotated[str | None, typer.Option(
        "--server", help="LUT server URL: --from are source LUT ids; creates the N whole-model jobs")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="BUDGETNAS_TOKEN", help="admin token")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="with --server: the new device's backend")] = None,
    batch: Batch = 1,
    threads: Threads = 1,
    runtime_version: RuntimeVersion = "unknown",
) -> None:
    """Predict a new device's latencies from other devices' tables (or LUTs on a server) plus a few measured archs."""
    import numpy as np

    from budgetnas.core.errors import UnknownNameError
    from budgetnas.generator.fleet import read_fleet
    from budgetnas.luts.transfer import METHODS, MIN_MEASURED, SELECTIONS, Fleet, choose_archs, fit
    from budgetnas.spaces import get_space

    if method not in METHODS:  # before any table is read
        raise UnknownNameError("transfer method", method, sorted(METHODS))
    if selection not in SELECTIONS:
        raise UnknownNameError("arch selection", selection, sorted(SELECTIONS))
    names = _sources(sources)
    if server is not None:
        if latency_table or measured:
            raise InvalidArgumentError("--server: the sources are LUTs on the server; --latency-table and "
                                       "--measured are the offline path")
        _on_server(server, token, device, backend, names, measure, selection, seed, batch, threads,
                   runtime_version, as_json)
        return
    if device in names:
        raise InvalidArgumentError(f"--device {device} is also in --from; a device cannot be its own source")
    if not latency_table:
        raise InvalidArgumentError("--latency-table: give the table(s) holding the --from columns "
                                   "(the server path, --server, is not built yet)")
    if measure is not None and measure < MIN_MEASURED:
        raise InvalidArgumentError(f"--measure: at least {MIN_MEASURED} archs, got {measure}")
    sp = get_space(space)
    table = read_fleet(latency_table, names, sp)
    fleet = Fleet.from_ms(table.names, table.ms)
    archs = [sp.format(sp.from_tokens(list(map(int, t)))) for t in table.tokens]
    if measured is None:
        if measure is None:
            raise InvalidArgumentError("--measure N: how many archs to choose (or --measured CSV:COLUMN to fit)")
        idx = choose_archs(fleet, measure, np.random.default_rng(seed), selection)
        if out is not None:
            with out.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["arch_str", device])
                w.writerows([archs[i], ""] for i in idx)
        if as_json:
            typer.echo(json.dumps({"device": device, "sources": list(names), "measure": [archs[i] for i in idx]}))
        else:
            for i in idx:
                typer.echo(archs[i])
        return
    idx_l, ms_l = _measured(measured, sp, table.row_of())
    if len(idx_l) < MIN_MEASURED:
        raise InvalidArgumentError(f"--measured: need at least {MIN_MEASURED} measured archs on the new device, "
                                   f"got {len(idx_l)}")
    if measure is not None and measure != len(idx_l):
        raise InvalidArgumentError(f"--measure {measure}, but --measured holds {len(idx_l)} archs")
    pred = fit(fleet, np.asarray(idx_l), np.asarray(ms_l), method)
    m = np.asarray(ms_l)
    inside = int(np.sum((m >= pred.low_ms[idx_l]) & (m <= pred.high_ms[idx_l])))
    if out is not None:
        with out.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["arch_str", "latency_ms", "low_ms", "high_ms"])
            for a, la, lo, hi in zip(archs, pred.latency_ms, pred.low_ms, pred.high_ms, strict=True):
                w.writerow([a, f"{la:.6g}", f"{lo:.6g}", f"{hi:.6g}"])
    top = sorted(pred.weights.items(), key=lambda kv: -kv[1])[:5]
    summary = {"device": device, "space": space, "method": pred.method, "transferred": True,
               "sources": list(names), "imputed_sources": list(fleet.imputed), "n_measured": len(idx_l),
               "n_archs": len(archs), "measured_within_band": inside, "noise_sd_log": round(pred.noise_sd, 4),
               "weights": {k: round(v, 4) for k, v in top}, "out": str(out) if out else None}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"{device}: {pred.method} from {len(names)} source(s), {len(idx_l)} measured archs; "
               f"{len(archs)} archs predicted (band: ±2 sd in log space)")
    typer.echo(f"measured archs inside their band: {inside}/{len(idx_l)}; noise sd (log) {pred.noise_sd:.3f}")
    typer.echo("weights: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    if out is not None:
        typer.echo(f"wrote {out} (train on it with --latency-table {out}:latency_ms)")
