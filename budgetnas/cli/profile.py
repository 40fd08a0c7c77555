"""``budgetnas profile`` (measure every block key of a space into a LUT) and ``budgetnas validate``
(measure random whole models and report how well the LUT predicts them).

Everything a user can get wrong (space, resolution, backend, batch, output path, a missing extra or
GPU) is checked before any measuring; outputs are written atomically at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()

Quick = Annotated[bool, typer.Option("--quick", help="short protocol (fewer runs): rougher numbers, for smoke runs")]


@app.command("profile")
def profile_cmd(
    space: Annotated[str, typer.Option("--space", help="search space (see `budgetnas spaces list`)")],
    out: Annotated[Path, typer.Option("--out", help="LUT file to write (JSON)")],
    resolution: Annotated[int | None, typer.Option("--resolution", help="input resolution")] = None,
    width: Annotated[float | None, typer.Option("--width", help="ofa-mbv3 width: 1.0 or 1.2")] = None,
    backend: Annotated[str, typer.Option("--backend", help="runner: ort-cpu, torch-cpu, litert-cpu, "
                                                           "torch-cuda, ort-cuda")] = "ort-cpu",
    threads: Annotated[int, typer.Option("--threads", help="runtime threads")] = 1,
    batch: Annotated[int | None, typer.Option("--batch", help="batch size (default 1; 64 on CUDA)")] = None,
    device: Annotated[str | None, typer.Option("--device", help="device name stored in the LUT "
                                                                "(default: hostname)")] = None,
    exporter: Annotated[str, typer.Option("--exporter", help="ONNX exporter: dynamo or torchscript")] = "dynamo",
    statistic: Annotated[str, typer.Option(
        "--statistic", help="what predictions sum: median (default), mean, min or p90 (min reproduces better on "
                            "small models, e.g. nb201 or ofa-mbv3 at 128 on a busy CPU)")] = "median",
    quick: Quick = False,
) -> None:
    """Measure every block key of SPACE at RESOLUTION on BACKEND and write a LUT file.

    The LUT is JSON, format budgetnas-lut version 1 (schema in budgetnas/luts/lut.py); the keys follow the
    space's block-key grammar (ofa-mbv3 keys are byte-identical to Once-for-All's).
    """
    from dataclasses import replace

    from budgetnas.cli.spaces import space_with
    from budgetnas.core.errors import InvalidArgumentError
    from budgetnas.luts.lut import STATISTICS
    from budgetnas.profiler.fidelity import check_writable
    from budgetnas.profiler.lutbuild import profile_space
    from budgetnas.profiler.protocol import Protocol
    from budgetnas.profiler.runners import get_runner

    if statistic not in STATISTICS:
        raise InvalidArgumentError(f"--statistic {statistic!r} is not one of {list(STATISTICS)}")
    sp = space_with(space, width, resolution)
    runner = get_runner(backend, threads=threads, batch=batch, exporter=exporter)
    check_writable(out)
    lut, m = profile_space(sp, runner, Protocol.quick() if quick else Protocol(), device=device)
    lut.meta = replace(lut.meta, statistic=statistic)
    lut.save(out)
    cvs = sorted(s.cv or 0.0 for s in lut.entries.values())
    typer.echo(f"wrote {out}: {len(lut.entries)} block keys, {runner.name} threads={runner.threads} "
               f"batch={runner.batch}, overhead {(m.overhead.median_ms or 0.0) * 1e3:.1f} us/call, "
               f"median cv {cvs[len(cvs) // 2]:.3f}, noisy {len(m.noisy)}, {m.wall_seconds:.0f} s", err=True)


@app.command("validate")
def validate_cmd(
    lut_path: Annotated[Path, typer.Option("--lut", help="LUT file written by `budgetnas profile`")],
    models: Annotated[int, typer.Option("--models", help="random whole models to measure (the calibration is "
                                                         "fitted on all; its figures by 5-fold cross-"
                                                         "validation)")] = 20,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="write predicted-vs-measured PNG here")] = None,
    update_lut: Annotated[bool, typer.Option("--update-lut", help="store the fitted calibration in the LUT")] = False,
    calibration: Annotated[str, typer.Option("--calibration", help="grouped (one scale per stage, the default) "
                                                                   "or affine (slope and intercept only)")] = "grouped",
    correct_sessions: Annotated[bool, typer.Option("--correct-sessions/--no-correct-sessions",
                                                   help="divide the models' times by the ratio of their session's "
                                                        "reference workload to the LUT's")] = True,
    sessions: Annotated[int, typer.Option("--sessions", help="measure the models in this many sessions and pool "
                                                             "their times (each session on the first's scale): "
                                                             "a steadier truth on a noisy machine")] = 1,
    quick: Quick = False,
) -> None:
    """Measure random whole models on the LUT's runner; report raw and calibrated LUT accuracy."""
    from budgetnas.cli.util import session_line, tau_text
    from budgetnas.core.errors import InvalidArgumentError
    from budgetnas.luts.calibration import METHODS
    from budgetnas.luts.lut import LUT
    from budgetnas.profiler.fidelity import MIN_MODELS, check_writable, plot_fidelity, runner_for, validate
    from budgetnas.profiler.protocol import Protocol

    if calibration not in METHODS:
        raise InvalidArgumentError(f"--calibration must be {' or '.join(map(repr, METHODS))}, got {calibration!r}")
    if models < MIN_MODELS:
        raise InvalidArgumentError(f"--models must be >= {MIN_MODELS} (each judged by a fit on the others)")
    if sessions < 1:
        raise InvalidArgumentError(f"--sessions must be >= 1, got {sessions}")
    lut = LUT.load(lut_path)
    runner = runner_for(lut)
    if plot is not None:
        check_writable(plot)
    if update_lut:
        check_writable(lut_path)
    report = validate(lut, models, seed, runner, Protocol.quick() if quick else Protocol(),
                      method=calibration, correct_sessions=correct_sessions, model_sessions=sessions)
    d = report.to_dict()
    if plot is not None:
        plot_fidelity(report, plot)
    if update_lut:
        lut.calibration = report.calibration
        lut.save(lut_path)
    if as_json:
        typer.echo(json.dumps(d))
        return
    typer.echo(f"{d['n_models']} models (stored calibration: all {d['n_models']}; figures: cross-validated over "
               f"{d['folds']} folds, each of the {d['n_eval']} judged by the fit on at least {d['n_fit']} others), "
               f"{d['backend']} threads={d['threads']} batch={d['batch']}")
    typer.echo(f"{'':18}{'MAPE':>8}{'RMSPE':>8}{'±5%':>8}{'±10%':>8}{'tau':>8}")
    for name in ("raw", "calibrated", "calibrated_affine"):  # the affine row only beside a grouped fit
        r = d.get(name)
        if r is not None:
            typer.echo(f"{name:18}{r['mape']:8.2%}{r['rmspe']:8.2%}{r['within_5pct']:8.0%}{r['within_10pct']:8.0%}"
                       f"{tau_text(r['kendall_tau'], 8)}")
    typer.echo(session_line(d, d["disturbed_models"]))
    if d["session_noise"] is not None:
        typer.echo(f"Models measured in {d['model_sessions']} sessions and pooled; one session's time scatters by "
                   f"{d['session_noise']:.2%} (sd) between sessions.")
    c = d["calibration"]
    scales = ", ".join(f"{g} x{v:.3f}" for g, v in sorted(c.get("group_scales", {}).items()))
    typer.echo(f"calibration: measured = {c['slope']:.4f} * {'scaled ' if scales else ''}raw + "
               f"{c['intercept']:.4f} ms" + (f"; group scales {scales}" if scales else ""))
