"""``budgetnas train | generate | search``: the PNAG trainer job, instant generation, baselines."""

from __future__ import annotations

import functools
import inspect
import io
import json
import math
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from budgetnas.core.errors import DataFileError, InvalidArgumentError

app = typer.Typer(help="PNAG generator: train, generate, search.")
# the protocol's defaults, repeated so `--help` needs no torch import (a test keeps them equal)
EXPLORE_SHARE, ROUNDS = 0.3, 10

Space = Annotated[str, typer.Option("--space", help="search space: nb201 or ofa-mbv3")]
Lut = Annotated[str | None, typer.Option("--lut", help="LUT file (JSON), or a LUT id with --db")]
Db = Annotated[str | None, typer.Option("--db", help="LUT database URL (read-only), with --lut ID")]
LatTable = Annotated[str | None, typer.Option("--latency-table", help="measured per-arch latency, CSV:COLUMN")]
LatMlp = Annotated[str | None, typer.Option("--latency-mlp", help="train an MLP latency predictor on CSV:COLUMN")]
AccTable = Annotated[str | None, typer.Option("--accuracy-table", help="accuracy records, CSV:COLUMN")]
AccDb = Annotated[str | None, typer.Option("--accuracy-db", help="accuracy records from the LUT database URL")]
AccPred = Annotated[str | None, typer.Option("--accuracy-predictor",
                                             help="a published accuracy predictor, KIND:PATH (ofa:acc_predictor.npz); "
                                                  "each arch it answers counts against --max-queries")]
Dataset = Annotated[str | None, typer.Option("--dataset", help="dataset of the database's accuracy records")]
MaxQ = Annotated[int, typer.Option("--max-queries", min=10, help="accuracy records read in total, at most")]
K = Annotated[int, typer.Option("--budgets", min=1, help="K: budget anchors evenly spaced over the latency range")]
Iters = Annotated[int, typer.Option("--iterations", min=1, help="training iterations (before validation rounds)")]
Explore = Annotated[float, typer.Option("--explore-share", min=0.1, max=1.0,
                                        help="share of --max-queries read spread over the latency range before "
                                             "training; the rest validates the method's own best candidates")]
Rounds = Annotated[int, typer.Option("--rounds", min=0, help="validation rounds (each refits the predictor)")]
Seed = Annotated[int, typer.Option("--seed")]
Width = Annotated[float | None, typer.Option("--width", help="ofa-mbv3 width (1.0 or 1.2)")]
Resolution = Annotated[int | None, typer.Option("--resolution", help="input resolution")]
LutFamilyOpt = Annotated[str | None, typer.Option(
    "--lut-family", help="ofa-mbv3 with resolution searched: one LUT per resolution, as comma-separated LUT files "
                         "or directories (their *.json), or LUT ids with --db; each LUT's meta names its resolution")]
Resolutions = Annotated[str | None, typer.Option(
    "--resolutions", help="ofa-mbv3: search these resolutions, e.g. 160,176,192,208,224 (default with --lut-family: "
                          "the family's)")]


def parse_resolutions(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isascii() and p.isdigit() and len(p) <= 4 for p in parts):
        raise InvalidArgumentError(f"--resolutions must be comma-separated integers like 160,176,192, got {text!r}")
    return [int(p) for p in parts]


def _space(space: str, width: float | None, resolution: int | None, resolutions: str | None,
           family: Any) -> Any:
    """The space; with --lut-family or --resolutions an ofa-mbv3 whose resolution is a searched decision
    (width and resolutions default to the family's)."""
    from budgetnas.cli.spaces import space_with

    if resolutions is None and family is None:
        return space_with(space, width, resolution)
    from budgetnas.generator.sources import family_resolutions
    from budgetnas.spaces import get_space

    if space != "ofa-mbv3":
        raise InvalidArgumentError(f"--lut-family/--resolutions search ofa-mbv3's resolution; --space is {space}")
    if resolution is not None:
        raise InvalidArgumentError("--resolution fixes the resolution; --lut-family/--resolutions search it: "
                                   "give one or the other")
    searched = parse_resolutions(resolutions) if resolutions is not None else family_resolutions(family)
    if width is None and family:
        width = family[0][1].meta.space.get("width")
    return get_space(space, width=width, resolutions=searched)


@dataclass(frozen=True)
class ProblemOptions:
    """What every command that sets up a search problem (``train``, ``search``) is told: the space,
    where latency and accuracy come from, the query budget and the protocol."""

    space: str
    lut: str | None
    db: str | None
    latency_table: str | None
    latency_mlp: str | None
    accuracy_table: str | None
    accuracy_db: str | None
    accuracy_predictor: str | None
    dataset: str | None
    max_queries: int
    budgets: int
    iterations: int
    seed: int
    width: float | None
    resolution: int | None
    explore_share: float
    rounds: int
    lut_family: str | None
    resolutions: str | None

    def problem(self) -> Any:
        from budgetnas.generator.accuracy import prepare
        from budgetnas.generator.sources import accuracy_source, latency_oracle, load_lut_family

        if self.db is not None and self.lut is None and self.lut_family is None:
            raise InvalidArgumentError("--db needs --lut ID or --lut-family IDS")
        if self.lut is not None and self.lut_family is not None:
            raise InvalidArgumentError("give --lut (one resolution) or --lut-family (resolution searched), not both")
        family = load_lut_family(self.lut_family, self.db) if self.lut_family is not None else None
        sp = _space(self.space, self.width, self.resolution, self.resolutions, family)
        lat = latency_oracle(sp, lut=self.lut, db=self.db, latency_table=self.latency_table,
                             latency_mlp=self.latency_mlp, seed=self.seed, lut_family=family)
        acc = accuracy_source(sp, accuracy_table=self.accuracy_table, accuracy_db=self.accuracy_db,
                              dataset=self.dataset, accuracy_predictor=self.accuracy_predictor)
        return prepare(sp, lat, acc, self.max_queries, seed=self.seed, explore_share=self.explore_share)

    def search_options(self, **kw: Any) -> Any:
        from budgetnas.generator.pnag import TrainConfig
        from budgetnas.generator.search import SearchOptions

        return SearchOptions(train=TrainConfig(iterations=self.iterations, budgets=self.budgets, seed=self.seed),
                             rounds=self.rounds, **kw)


# ProblemOptions' fields as typer options, declared once for every command that takes them
_PROBLEM_PARAMS = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
                   for name, ann, default in (
    ("space", Space, "nb201"), ("lut", Lut, None), ("db", Db, None), ("latency_table", LatTable, None),
    ("latency_mlp", LatMlp, None), ("accuracy_table", AccTable, None), ("accuracy_db", AccDb, None),
    ("accuracy_predictor", AccPred, None), ("dataset", Dataset, None), ("max_queries", MaxQ, 1000),
    ("budgets", K, 10), ("iterations", Iters, 600), ("seed", Seed, 0), ("width", Width, None),
    ("resolution", Resolution, None), ("explore_share", Explore, EXPLORE_SHARE), ("rounds", Rounds, ROUNDS),
    ("lut_family", LutFamilyOpt, None), ("resolutions", Resolutions, None))]
assert [p.name for p in _PROBLEM_PARAMS] == [f.name for f in fields(ProblemOptions)]


def with_problem_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` (taking ``opts: ProblemOptions`` beside its own options) with the problem's options
    added to the signature typer reads, and gathered into one ``ProblemOptions`` when it runs."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "opts"]

    @functools.wraps(command)
    def run(**kw: Any) -> None:
        command(opts=ProblemOptions(**{p.name: kw.pop(p.name) for p in _PROBLEM_PARAMS}), **kw)

    params = own + _PROBLEM_PARAMS
    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


def _checked(opts: ProblemOptions, what: str, method: str, known: Collection[str]) -> Any:
    """The problem, once ``method`` is known to be one of ``known`` (before any data is read)."""
    if method not in known:
        from budgetnas.core.errors import UnknownNameError

        raise UnknownNameError(what, method, list(known))
    return opts.problem()


def bundle_path(out: Path) -> Path:
    return out.with_suffix(".bundle")


@app.command("train")
@with_problem_options
def train_cmd(
    out: Annotated[Path, typer.Option("--out", help="checkpoint to write; the torch-free bundle goes beside it")],
    opts: ProblemOptions,
    method: Annotated[str, typer.Option("--method", help="pnag (ours), pnag-paper (Algorithm 1: a frozen learned "
                                                          "evaluator), mnas, tunas, pareto-noacc")] = "pnag",
) -> None:
    """Train the PNAG generator; write OUT (torch) and OUT with suffix .bundle (numpy)."""
    import torch

    from budgetnas.generator.search import GENERATORS, run_method

    problem = _checked(opts, "generator method", method, GENERATORS)
    explored = problem.accuracy.used
    res = run_method(method, problem, [], opts.search_options())
    trained, bundle, final = res.trained, res.bundle, res.problem
    assert trained is not None and bundle is not None and final is not None
    data = bundle.to_bytes()
    ckpt = {"generator": trained.generator.state_dict(),
            "evaluator": trained.evaluator.state_dict() if trained.evaluator else None,
            "predictor": final.predictor.state_dict(), "meta": json.dumps(bundle.meta), "bundle": data}
    try:
        torch.save(ckpt, out)
        bundle_path(out).write_bytes(data)
    except OSError as exc:
        raise DataFileError(f"cannot write {out}: {exc.strerror}") from None
    rep = problem.report
    last = trained.history[-1]
    typer.echo(f"accuracy records read {final.accuracy.used}/{opts.max_queries} ({explored} spread over the latency "
               f"range, {final.accuracy.used - explored} validating the generator's best); predictor held-out "
               f"kendall_tau={rep.kendall_tau:.3f} rmse={rep.rmse:.3f} (n_test={rep.n_test}, first fit)")
    typer.echo(f"trained {trained.steps} iterations in {trained.seconds:.1f}s ({trained.calls} predictor calls, "
               f"{len(trained.archive)} distinct archs seen); last batch within budget {last['feasible']:.1%}; "
               f"budgets {bundle.cheapest:.4g}..{bundle.dearest:.4g} ms")
    searched = problem.space.describe().get("resolutions")
    if searched:  # the family decides which resolutions are searched: say so
        typer.echo(f"resolution searched over {searched} (one LUT each)")
    typer.echo(f"wrote {out} and {bundle_path(out)}")


def load_bundle(path: Path) -> Any:
    """A bundle file, or the bundle inside a checkpoint written by ``train``."""
    from budgetnas.generator.bundle import GeneratorBundle

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFileError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    try:  # a bundle is a zip holding meta.npy (a torch checkpoint is a zip too, without it)
        is_bundle = "meta.npy" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        is_bundle = False
    if is_bundle:
        return GeneratorBundle.from_bytes(data)  # its errors (version, space) are the answer
    import torch

    try:
        ckpt = torch.load(path, weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise DataFileError(f"{path} is neither a generator bundle nor a checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("bundle"), bytes):
        raise DataFileError(f"{path} is a torch file but not a generator checkpoint")
    return GeneratorBundle.from_bytes(ckpt["bundle"])


@app.command("generate")
def generate_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="gen.ckpt or gen.bundle from `train`")],
    budget: Annotated[float, typer.Option("--budget", help="latency budget in ms")],
    samples: Annotated[int, typer.Option("--samples", min=0, help="also return N generated archs")] = 0,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """The best architecture for BUDGET: arch, predicted latency and accuracy (no search)."""
    out = load_bundle(checkpoint).generate(budget, samples=samples, seed=seed)
    if as_json:
        typer.echo(json.dumps(out))
        return
    if "warning" in out:
        typer.echo(f"warning: {out['warning']}", err=True)
    typer.echo(f"arch        {out['arch']}\nlatency_ms  {out['latency_ms']:.4f}\naccuracy    {out['accuracy']:.3f}")
    for s in out.get("samples", []):
        typer.echo(f"sample  {s['latency_ms']}  {s['arch']}")


@app.command("search")
@with_problem_options
def search_cmd(
    method: Annotated[str, typer.Option("--method", help="pnag, pnag-paper, random, evolution, naive, mnas, "
                                                          "tunas, sgnas, pareto-noacc, independent")],
    opts: ProblemOptions,
    budget: Annotated[list[float] | None, typer.Option("--budget", help="budget in ms (repeatable)")] = None,
    generations: Annotated[int, typer.Option("--generations", min=1, help="evolution generations")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per budget")] = False,
) -> None:
    """Run one method (PNAG or a baseline) for the given budgets (default: 20..100% of the range)."""
    from budgetnas.generator.search import METHOD_NAMES, run_method

    problem = _checked(opts, "search method", method, METHOD_NAMES)
    lo, hi = problem.lat_range
    targets = list(budget) if budget else [lo + p * (hi - lo) for p in (0.2, 0.4, 0.6, 0.8, 1.0)]
    for b in targets:  # the same rule as `generate` and the server
        if not (math.isfinite(b) and b > 0):
            raise InvalidArgumentError(f"budget must be a positive number of ms, got {b}")
        if b < lo:
            raise InvalidArgumentError(f"budget {b:g} ms is below the cheapest architecture ({lo:.4g} ms); "
                                       f"valid budgets are {lo:.4g}..{hi:.4g} ms (larger ones are accepted)")
    res = run_method(method, problem, targets, opts.search_options(evo_generations=generations))
    for b, ans in zip(targets, res.answers, strict=True):
        arch = problem.space.format(problem.space.from_tokens(ans.tokens.tolist()))
        row: dict[str, Any] = {"budget_ms": b, "arch": arch, "latency_ms": ans.latency_ms, "accuracy": ans.accuracy}
        if ans.warning:
            row["warning"] = ans.warning
        typer.echo(json.dumps(row) if as_json else
                   f"{b:10.4f} ms  {ans.latency_ms:10.4f} ms  {ans.accuracy:7.3f}  {arch}")
    typer.echo(f"{method}: {res.queries} accuracy records read, {res.calls} predictor calls; "
               f"train {res.train_seconds:.1f}s", err=True)
