"""``make demo``: the whole pipeline on the embedded defaults (SQLite, this machine's CPU).

1. starts the LUT server on loopback with a SQLite file, registers this machine as a device;
2. creates a campaign for the ofa-mbv3 LUT at one resolution (every block key plus whole models
   for validation) and starts a local CPU agent (ort-cpu, 1 thread) that measures it;
3. fits the LUT's calibration on the measured whole models and reports its fidelity on held-out ones;
4. trains the weight-sharing supernet on ``digits`` and posts sub-network accuracies to the server;
5. trains the PNAG evaluator and generator straight from the database;
6. generates an architecture for 5 budgets spread over the LUT's range, measures each on this CPU
   with the same runner beside a few validation models (whose re-measurement gives the session's
   drift), asks once more for a budget whose answer measured over it, prints a table and writes an
   HTML report (fidelity scatter, frontier, latency histograms of generated samples);
7. stops everything it started.

Every step runs the real ``budgetnas`` CLI, as a user would. Run ``python -m budgetnas.cli.demo --help``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from budgetnas.cli.server import DEFAULT_VALIDATION_MODELS
from budgetnas.cli.util import session_line, tau_text
from budgetnas.core.errors import ServerError
from budgetnas.core.http import RestClient
from budgetnas.luts.calibration import MIN_HOLDOUT, pick_anchors
from budgetnas.luts.lut import LatencyStats

DEVICE = "this-cpu"
BACKEND = "ort-cpu"
SUPERNET_INPUT = 32
DATASET = f"digits@{SUPERNET_INPUT}px"  # what `supernet eval` names records trained at that input size
# The steps' sizes, fixed: enough for every step to do its real work in minutes on one CPU thread
SUPERNET_EPOCHS = 1
SUPERNET_MAX_BATCHES = 24
EVAL_ARCHS = 150  # sub-networks the supernet evaluates (the accuracy records)
MAX_QUERIES = 150  # accuracy records the evaluator reads, at most
N_BUDGETS = 5
SAMPLES = 1000  # generated per budget
LEASE_BATCH = 8  # jobs the demo's agent leases and measures together
ANCHORS = 5  # validation models measured again beside the generated archs: that session's drift, like for like
# The demo's models are small (1.5-3 ms): there the fastest run reproduces between sessions and the LUT's
# sum of minima predicts the whole model's (r128 w1.0, 200 models, quiet: 99% within ±5% vs the median's
# 94-95%, bench/results/lut_fidelity); on 5-11 ms models the median does better, and is the default.
STATISTIC = "min"


@dataclass
class Settings:
    """What the command line sets (its defaults are these)."""

    out: Path
    resolution: int = 128
    width: float = 1.0
    validation_models: int = DEFAULT_VALIDATION_MODELS
    quick: bool = False
    iterations: int = 600
    seed: int = 0


@dataclass
class Step:
    name: str
    seconds: float = 0.0


@dataclass
class Demo:
    cfg: Settings
    admin: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    steps: list[Step] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    url: str = ""
    transport: httpx.BaseTransport | None = None  # tests: the server in process instead of the network

    # ---- plumbing --------------------------------------------------------------------------------
    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"\n== {name}", flush=True)
        t = time.perf_counter()
        yield
        self.steps.append(Step(name, time.perf_counter() - t))
        print(f"   done in {self.steps[-1].seconds:.0f} s", flush=True)

    def env(self) -> dict[str, str]:
        return {**os.environ, "BUDGETNAS_ADMIN_TOKEN": self.admin, "PYTHONUNBUFFERED": "1"}

    def cli(self, *args: str) -> str:
        """Run ``budgetnas ARGS``: progress (stderr) goes to the terminal, stdout is returned."""
        cmd = [sys.executable, "-m", "budgetnas", *args]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, env=self.env(), text=True)
        if proc.returncode != 0:
            raise SystemExit(f"demo: `budgetnas {' '.join(args[:3])} ...` failed with exit code {proc.returncode}")
        return proc.stdout

    def background(self, log: str, *args: str) -> subprocess.Popen[bytes]:
        logf = (self.cfg.out / log).open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "budgetnas", *args], stdout=logf, stderr=subprocess.STDOUT,
                                env=self.env(), start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    def api(self, method: str, path: str, **kw: Any) -> Any:
        """One admin call to the demo's server; an error answer (or none) ends the demo with its message."""
        try:
            with RestClient(self.url, self.admin, timeout=120, transport=self.transport) as client:
                return client.request(method, path, **kw)
        except ServerError as exc:
            raise SystemExit(f"demo: {exc}") from None

    def wait_healthy(self, timeout_s: float = 120.0) -> bool:
        """Poll ``/healthz`` until the server answers it (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        with RestClient(self.url, timeout=2, transport=self.transport) as probe:
            while time.monotonic() < deadline:
                try:
                    probe.request("GET", "/healthz")
                    return True
                except ServerError:
                    time.sleep(0.3)
        return False

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.cfg.out / 'budgetnas.db'}"

    @property
    def space(self) -> dict[str, Any]:
        return {"space": "ofa-mbv3", "width": self.cfg.width, "resolution": self.cfg.resolution}

    # ---- the pipeline ------------------------------------------------------------------------------
    def start_server(self) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.background("server.log", "serve", "--db", self.db_url, "--host", "127.0.0.1", "--port", str(port),
                        "--log-level", "warning")
        if not self.wait_healthy():
            raise SystemExit(f"demo: the LUT server did not start; see {self.cfg.out / 'server.log'}")
        print(f"   LUT server on {self.url} (SQLite {self.cfg.out / 'budgetnas.db'})")
        print(f"   dashboard: {self.url}/dashboard/")

    def profile(self) -> int:
        token = self.cli("device", "register", "--server", self.url, "--token", self.admin,
                         "--name", DEVICE).strip().splitlines()[-1]
        out = self.cli("campaign", "create", "--server", self.url, "--token", self.admin, "--space", "ofa-mbv3",
                       "--width", str(self.cfg.width), "--resolution", str(self.cfg.resolution),
                       "--device", DEVICE, "--backend", BACKEND, "--threads", "1",
                       "--validation-models", str(self.cfg.validation_models), "--seed", str(self.cfg.seed),
                       "--statistic", STATISTIC)
        lut_id = int(out.strip().splitlines()[-1])
        # leases of LEASE_BATCH jobs, each lease measured in one session (interleaved rounds, as `profile` does)
        agent_args = ["agent", "--server", self.url, "--token", token, "--name", DEVICE, "--backend", BACKEND,
                      "--threads", "1", "--lease-batch", str(LEASE_BATCH),
                      "--spool", str(self.cfg.out / "agent-spool.jsonl"),
                      "--cache-dir", str(self.cfg.out / "artifacts")]
        if self.cfg.quick:
            agent_args.append("--quick")
        agent = self.background("agent.log", *agent_args)
        from tqdm import tqdm

        with tqdm(desc=f"   LUT {lut_id} jobs", unit="job", file=sys.stderr) as bar:
            while True:
                lut = self.api("GET", f"/v1/luts/{lut_id}")
                p = lut["progress"]
                total = sum(p[k] for k in ("queued", "leased", "done", "failed"))
                bar.total = total
                bar.n = p["done"] + p["failed"]
                bar.refresh()
                if total and p["done"] + p["failed"] == total:
                    break
                if agent.poll() is not None:
                    raise SystemExit(f"demo: the agent exited ({agent.returncode}); see {self.cfg.out / 'agent.log'}")
                time.sleep(2)
        if p["failed"]:
            raise SystemExit(f"demo: {p['failed']} measurement jobs failed; see {self.cfg.out / 'agent.log'}")
        self.stop_all_but_server()
        return lut_id

    def stop_all_but_server(self) -> None:
        server, rest = self.procs[0], self.procs[1:]
        self.procs = rest
        self.stop_all()
        self.procs = [server]

    def calibrate(self, lut_id: int) -> dict[str, Any]:
        """The server's one calibration fit (the same as ``budgetnas validate``'s) on every measured model,
        stored in the LUT; its figures are cross-validated (each model judged by the same fit without its fold)."""
        out = self.api("POST", f"/v1/luts/{lut_id}/calibrate", json={"method": "grouped", "seed": self.cfg.seed})
        if out["holdout"] is None:
            raise SystemExit(f"demo: calibrated, but no held-out figures: {out['holdout_error']}")
        report: dict[str, Any] = {**out["holdout"], "calibration": out["calibration"], "sessions": out["sessions"],
                                  "models": self.api("GET", f"/v1/luts/{lut_id}/validation")["models"]}
        print(f"   {session_line(out['sessions'])}")
        for kind in ("raw", "calibrated"):
            m = report[kind]
            print(f"   {kind:>10} on {report['n_held_out']} held-out models: MAPE {100 * m['mape']:.2f}%  "
                  f"RMSPE {100 * m['rmspe']:.2f}%  within ±5% {100 * m['within_5pct']:.0f}%  "
                  f"Kendall tau {tau_text(m['kendall_tau'])}")
        return report

    def supernet(self) -> Path:
        ckpt = self.cfg.out / "supernet.ckpt"
        # 8x8 digits are fed at 32 px (block keys stay those of the LUT's resolution): at 128 px a
        # CPU step costs ~20x more for no gain on 8x8 images. Records are labelled digits@32px.
        self.cli("supernet", "train", "--dataset", "digits", "--width", str(self.cfg.width),
                 "--resolution", str(self.cfg.resolution), "--input-size", str(SUPERNET_INPUT),
                 "--threads", "1", "--epochs", str(SUPERNET_EPOCHS),
                 "--max-batches", str(SUPERNET_MAX_BATCHES), "--seed", str(self.cfg.seed), "--out", str(ckpt))
        # one thread here too: OpenMP spin-waits when another process runs (15-24 s per sub-network, not 2)
        self.cli("supernet", "eval", "--checkpoint", str(ckpt), "--archs", str(EVAL_ARCHS), "--threads", "1",
                 "--seed", str(self.cfg.seed), "--out", str(self.cfg.out / "accuracy.csv"),
                 "--server", self.url, "--token", self.admin)
        return ckpt

    def train(self, lut_id: int) -> Path:
        gen = self.cfg.out / "generator.ckpt"
        self.cli("train", "--space", "ofa-mbv3", "--lut", str(lut_id), "--db", self.db_url,
                 "--accuracy-db", self.db_url, "--dataset", DATASET, "--max-queries", str(MAX_QUERIES),
                 "--iterations", str(self.cfg.iterations), "--seed", str(self.cfg.seed),
                 "--width", str(self.cfg.width), "--resolution", str(self.cfg.resolution), "--out", str(gen))
        bundle = gen.with_suffix(".bundle")
        self.api("POST", "/v1/checkpoints", json={"name": "demo-generator",
                                                  "bundle": base64.b64encode(bundle.read_bytes()).decode()})
        return bundle

    def generate(self, bundle: Path, margin: float) -> list[dict[str, Any]]:
        from budgetnas.generator.bundle import GeneratorBundle

        lo, hi = GeneratorBundle.from_bytes(bundle.read_bytes()).meta["budget_range"]
        rows = []
        for frac in np.linspace(0.2, 1.0, N_BUDGETS):
            budget = float(lo + frac * (hi - lo))
            rows.append(self.ask(bundle, budget, budget / margin))
        return rows

    def ask(self, bundle: Path, budget: float, asked: float) -> dict[str, Any]:
        out = json.loads(self.cli("generate", "--checkpoint", str(bundle), "--budget", f"{asked:.6f}",
                                  "--samples", str(SAMPLES), "--seed", str(self.cfg.seed), "--json"))
        return {"budget_ms": budget, "asked_ms": asked, "asks": 1, **out}

    def measure(self, rows: list[dict[str, Any]], statistic: str, anchors: Sequence[dict[str, Any]],
                lut_reference_ms: float | None) -> None:
        """Each generated arch measured with the runner that profiled the LUT, in one session with
        ``anchors`` (validation models, as ``/validation`` lists them) whose re-measurement puts the
        session on the calibration's scale; judged by :func:`judge`. The reference workload is timed
        around each visit as for the LUT's entries, and its drift is reported beside."""
        from budgetnas.profiler.fidelity import measure_anchored
        from budgetnas.profiler.protocol import Protocol
        from budgetnas.profiler.runners import get_runner
        from budgetnas.profiler.targets import model_target
        from budgetnas.spaces import get_space

        sp = get_space("ofa-mbv3", width=self.cfg.width, resolution=self.cfg.resolution)
        targets = [model_target(sp, sp.parse(r["arch"])) for r in rows]
        session = measure_anchored(get_runner(BACKEND, threads=1), targets,
                                   [model_target(sp, sp.parse(m["arch"])) for m in anchors],
                                   [fitted_ms(m) for m in anchors], statistic,
                                   Protocol.quick() if self.cfg.quick else Protocol(), lut_reference_ms,
                                   desc="   measuring generated archs and anchors")
        drift, reference = session.drift, session.reference_ratio
        print(f"   {drift_line(drift.to_dict(), reference)}")
        for r, t in zip(rows, targets, strict=True):
            judge(r, session.measurement.stats[t.name], statistic, drift.ratio)
            r.update(anchors=drift.to_dict(), reference_ratio=reference)

    def verify(self, bundle: Path, rows: list[dict[str, Any]], statistic: str, anchors: Sequence[dict[str, Any]],
               lut_reference_ms: float | None) -> None:
        """Each answer that measured over its budget is asked once more, the budget shrunk by how far
        over its prediction it measured, and the new answer is measured in a session of its own (with
        the anchors again), so its verdict is one measurement as the others' are. The first answer is
        kept in the row (``first``) and reported."""
        over = [i for i, r in enumerate(rows) if not r["fits"]]
        if not over:
            return
        retry = []
        for i in over:
            r = rows[i]
            error = r["corrected_ms"] / r["latency_ms"]  # measured / predicted, on the calibration's scale
            again = self.ask(bundle, r["budget_ms"], r["asked_ms"] / max(error, 1.0))
            retry.append({**again, "asks": 2, "first": {k: v for k, v in r.items() if k != "samples"}})
        print(f"   {len(over)} answer(s) measured over budget: asked again, budget shrunk by the measured error")
        self.measure(retry, statistic, anchors, lut_reference_ms)
        for i, r in zip(over, retry, strict=True):
            rows[i] = r


def fitted_ms(model: dict[str, Any]) -> float:
    """A validation model's time as the calibration was fitted on it (its session divided out, if it was)."""
    return float(model.get("corrected_ms", model["measured_ms"]))


def judge(row: dict[str, Any], stats: LatencyStats, statistic: str, ratio: float | None) -> None:
    """Whether a generated arch fits its budget, as measured and on the calibration's scale.

    The budget was predicted on the calibration's scale (fitted on the validation models, their
    session divided out), so a measurement is divided by this session's drift from that scale
    (``ratio``: re-measured validation models, now / as fitted) before it is judged: ``fits``.
    ``fits_as_measured`` keeps the undivided verdict beside it; both are printed and reported."""
    value = stats.value(statistic)
    corrected = value / ratio if ratio else value
    row.update(measured_ms=value, measured_median_ms=stats.median_ms, statistic=statistic, drift=ratio,
               corrected_ms=corrected, fits_as_measured=bool(value <= row["budget_ms"]),
               fits=bool(corrected <= row["budget_ms"]))


def drift_line(anchors: dict[str, Any] | None, reference: float | None = None) -> str:
    ref = ("the reference workload not timed in the LUT's session" if reference is None
           else f"the reference workload ran at x{reference:.3f} the LUT session's")
    if anchors is None:
        return f"Drift: no anchors re-measured; judged as measured ({ref})."
    return (f"Drift: {anchors['anchors']} validation models re-measured in this session ran at x{anchors['ratio']:.3f} "
            f"their fitted times (median; x{anchors['min']:.3f}-x{anchors['max']:.3f}); measurements are divided by "
            f"it before they are judged, both verdicts shown ({ref}).")


# ---- report -----------------------------------------------------------------------------------------
def print_table(rows: Sequence[dict[str, Any]]) -> None:
    stat = rows[0]["statistic"] if rows else "median"
    print(f"\n{'budget ms':>9} {'asks':>4} {'predicted':>9} {'measured':>9} {'/ drift':>9} {'median':>9} {'fits':>4} "
          f"{'accuracy':>8}  arch\n{'':>24} {f'({stat})':>9}")
    for r in rows:
        verdict = "yes" if r["fits"] else "NO"
        if r["fits"] != r["fits_as_measured"]:
            verdict += "*"  # the drift decided it
        print(f"{r['budget_ms']:9.2f} {r['asks']:4d} {r['latency_ms']:9.2f} {r['measured_ms']:9.2f} "
              f"{r['corrected_ms']:9.2f} {r['measured_median_ms']:9.2f} {verdict:>4} {r['accuracy']:8.2f}  {r['arch']}")
    if any(r["fits"] != r["fits_as_measured"] for r in rows):
        print("* fits (or not) only once this session's drift from the calibration's scale is divided out")
    for r in rows:
        if "first" in r:
            print(retry_line(r))


def retry_line(row: dict[str, Any]) -> str:
    """What the first answer to a budget asked twice measured, and what the second was asked."""
    f = row["first"]
    return (f"budget {row['budget_ms']:.2f} ms asked twice: the first answer, predicted {f['latency_ms']:.2f} ms, "
            f"measured {f['corrected_ms']:.2f} ms on the calibration's scale ({f['measured_ms']:.2f} as measured); "
            f"asked again for {row['asked_ms']:.2f} ms")


def distinct_fitting(row: dict[str, Any]) -> int:
    """Distinct archs among the generated samples that fit the budget asked."""
    return len({s["arch"] for s in row.get("samples", [])
                if s["latency_ms"] is not None and s["latency_ms"] <= row["asked_ms"]})


def shared_answers(rows: Sequence[dict[str, Any]]) -> str:
    """Which budgets got the same arch, and why: the answer is the best-scored fitting arch the
    generator knows (samples, archive, records), so a larger budget answered like a smaller one
    means that nothing it knows within the larger one is predicted better."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r["arch"], []).append(r["budget_ms"])
    same = [b for b in groups.values() if len(b) > 1]
    if not same:
        return f"All {len(rows)} budgets got distinct architectures."
    txt = "; ".join(" and ".join(f"{x:.2f}" for x in b) + " ms" for b in same)
    return (f"Budgets answered with one architecture: {txt}. The answer is the best-scored fitting arch among "
            "the generated samples, the generator's archive and the records, so the predicted optimum is shared: "
            "nothing the generator found within the larger budget is predicted more accurate.")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_report(path: Path, demo: Demo, fidelity: dict[str, Any], rows: list[dict[str, Any]],
                 accuracy_csv: Path, predict: dict[str, float]) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = fidelity["models"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    meas = [m.get("corrected_ms", m["measured_ms"]) for m in models]  # on the LUT session's scale, as fitted
    ax.scatter(meas, [m["raw_ms"] for m in models], s=14, label="raw LUT sum", alpha=0.7)
    ax.scatter(meas, [m["predicted_ms"] for m in models], s=14, label="calibrated (stored fit)", alpha=0.7)
    lim = [min(meas) * 0.95, max(meas) * 1.05]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xlabel("measured whole-model latency (ms)")
    ax.set_ylabel("predicted (ms)")
    ax.legend()
    fid_png = _png(fig)

    acc = list(csv.DictReader(accuracy_csv.open()))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    xs = [predict[a["arch_str"]] for a in acc if a["arch_str"] in predict]
    ys = [float(a["accuracy"]) for a in acc if a["arch_str"] in predict]
    ax.scatter(xs, ys, s=10, c="0.6", label="supernet-evaluated sub-networks")
    ax.scatter([r["latency_ms"] for r in rows], [r["accuracy"] for r in rows], marker="*", s=160, c="C3",
               label="generated (predicted)", zorder=3)
    for r in rows:
        ax.axvline(r["budget_ms"], color="C3", lw=0.6, ls=":")
    ax.set_xlabel("predicted latency (ms, calibrated LUT)")
    ax.set_ylabel(f"top-1 accuracy ({DATASET})")
    ax.legend(loc="lower right")
    front_png = _png(fig)

    fig, axes = plt.subplots(1, len(rows), figsize=(3 * len(rows), 2.8), sharey=True)
    for ax, r in zip(np.atleast_1d(axes), rows, strict=True):
        lat = [s["latency_ms"] for s in r.get("samples", [])]
        ax.hist(lat, bins=30, color="C0")
        ax.axvline(r["budget_ms"], color="C3", lw=1.2)
        share = np.mean(np.asarray(lat) <= r["asked_ms"]) if lat else float("nan")
        ax.set_title(f"budget {r['budget_ms']:.1f} ms\n{100 * share:.0f}% of {len(lat)} fit", fontsize=9)
        ax.set_xlabel("predicted ms")
    hist_png = _png(fig)

    trs = "".join(
        f"<tr><td>{r['budget_ms']:.2f}</td><td>{r['asks']}</td><td>{r['latency_ms']:.2f}</td><td>{r['measured_ms']:.2f}</td>"
        f"<td>{r['corrected_ms']:.2f}</td><td>{r['measured_median_ms']:.2f}</td>"
        f"<td>{'yes' if r['fits'] else 'NO'}</td><td>{'yes' if r['fits_as_measured'] else 'NO'}</td>"
        f"<td>{r['accuracy']:.2f}</td><td>{distinct_fitting(r)}</td>"
        f"<td><code>{escape(r['arch'])}</code></td></tr>"
        for r in rows)
    shared = shared_answers(rows)
    stat = rows[0]["statistic"] if rows else "median"
    steps = "".join(f"<tr><td>{escape(s.name)}</td><td>{s.seconds:.0f} s</td></tr>" for s in demo.steps)
    fm = "".join(
        f"<tr><td>{k}</td><td>{100 * fidelity[k]['mape']:.2f}%</td><td>{100 * fidelity[k]['rmspe']:.2f}%</td>"
        f"<td>{100 * fidelity[k]['within_5pct']:.0f}%</td><td>{100 * fidelity[k]['within_10pct']:.0f}%</td>"
        f"<td>{tau_text(fidelity[k]['kendall_tau'])}</td></tr>" for k in ("raw", "calibrated"))
    cfg = demo.cfg
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>budgetnas demo report</title>
<style>body{{font:14px system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1d2330}}
table{{border-collapse:collapse}}td,th{{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}}
code{{font-size:12px}}</style></head><body>
<h1>budgetnas demo report</h1>
<p>{datetime.now().isoformat(timespec="seconds")} · ofa-mbv3 width {cfg.width} resolution {cfg.resolution} ·
device <b>{DEVICE}</b> backend <b>{BACKEND}</b> (1 thread, batch 1) · protocol {"quick" if cfg.quick else "default"}</p>
<h2>Generated architectures</h2>
<p>Each budget was asked of the generator shrunk by two held-out RMSPEs of the calibration, then the
returned architecture was measured on this CPU with the LUT's runner, in one session with {ANCHORS} of the
validation models (anchors); it fits when the LUT's statistic ({escape(stat)}) of its runs, divided by the
session's drift (the anchors' time now over their time as the calibration was fitted), is within the budget.
An answer measured over its budget was asked once more, the budget shrunk by how far over its prediction it
measured, and the new answer measured in a session of its own.
{escape(drift_line(rows[0].get("anchors"), rows[0].get("reference_ratio")) if rows else "")}</p>
<table><tr><th>budget (ms)</th><th>asks</th><th>predicted (ms)</th><th>measured, {escape(stat)} (ms)</th>
<th>/ drift (ms)</th>
<th>median (ms)</th><th>fits</th><th>fits as measured</th><th>accuracy</th>
<th>distinct fitting samples</th><th>arch</th></tr>{trs}</table>
{"".join(f"<p>{escape(retry_line(r))}</p>" for r in rows if "first" in r)}
<p>{escape(shared)}</p>
<h2>LUT fidelity</h2>
<p>The stored calibration (the server's grouped fit, as <code>budgetnas validate</code> fits it) uses all
{len(models)} measured whole models; the figures are cross-validated: each of the {fidelity['n_held_out']} models is
judged by the same fit made on {fidelity['n_fit']} or more of the others, without it ({fidelity['folds']} folds).
{escape(session_line(fidelity.get("sessions")))}</p>
<table><tr><th></th><th>MAPE</th><th>RMSPE</th><th>within ±5%</th><th>within ±10%</th><th>Kendall tau</th></tr>
{fm}</table>
<img src="data:image/png;base64,{fid_png}">
<h2>Frontier</h2><img src="data:image/png;base64,{front_png}">
<h2>Latency of {SAMPLES} generated samples per budget</h2><img src="data:image/png;base64,{hist_png}">
<h2>Time per step</h2><table>{steps}</table>
</body></html>"""
    path.write_text(html)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m budgetnas.cli.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="work directory (default runs/demo-<time>)")
    p.add_argument("--resolution", type=int, default=Settings.resolution)
    p.add_argument("--width", type=float, default=Settings.width)
    p.add_argument("--validation-models", type=int, default=Settings.validation_models)
    p.add_argument("--quick", action="store_true", help="short measurement protocol (rougher numbers)")
    p.add_argument("--iterations", type=int, default=Settings.iterations, help="generator training iterations")
    p.add_argument("--seed", type=int, default=Settings.seed)
    a = p.parse_args(argv)
    if a.validation_models < MIN_HOLDOUT:
        p.error(f"--validation-models must be >= {MIN_HOLDOUT} (each is judged by a fit on the others), "
                f"got {a.validation_models}")
    out = a.out or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    return Settings(out=out.resolve(), resolution=a.resolution, width=a.width, validation_models=a.validation_models,
                    quick=a.quick, iterations=a.iterations, seed=a.seed)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    demo = Demo(cfg)
    # SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, so `finally` stops the server and agent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.perf_counter()
    print(f"budgetnas demo: work directory {cfg.out}")
    try:
        with demo.step("start the LUT server (SQLite)"):
            demo.start_server()
        with demo.step(f"profile the ofa-mbv3 LUT at {cfg.resolution} with a local {BACKEND} agent"):
            lut_id = demo.profile()
        with demo.step("calibrate and validate on measured whole models"):
            fidelity = demo.calibrate(lut_id)
        with demo.step("train the supernet on digits and evaluate sub-networks"):
            demo.supernet()
        with demo.step("train the PNAG evaluator and generator from the database"):
            bundle = demo.train(lut_id)
        with demo.step(f"generate for {N_BUDGETS} budgets and measure the results on this CPU"):
            # each budget asked shrunk by two held-out RMSPEs (the calibration's error on models it did not
            # see, measurement noise included), so that the answer fits when measured, not only predicted
            margin = 1.0 + 2.0 * float(fidelity["calibrated"]["rmspe"])
            rows = demo.generate(bundle, margin)
            statistic = demo.api("GET", f"/v1/luts/{lut_id}")["meta"]["statistic"]
            models = fidelity["models"]
            anchors = [models[i] for i in pick_anchors([fitted_ms(m) for m in models], ANCHORS)]
            lut_ref = ((fidelity.get("sessions") or {}).get("reference_ms") or {}).get("lut")
            demo.measure(rows, statistic, anchors, lut_ref)
            demo.verify(bundle, rows, statistic, anchors, lut_ref)
        accuracy_csv = cfg.out / "accuracy.csv"
        import csv

        archs = [r["arch_str"] for r in csv.DictReader(accuracy_csv.open())]
        preds = demo.api("POST", "/v1/predict", json={"lut": lut_id, "archs": archs})["predictions"]
        report = cfg.out / "report.html"
        write_report(report, demo, fidelity, rows, accuracy_csv, {p["arch"]: p["latency_ms"] for p in preds})
    finally:
        demo.stop_all()
    print_table(rows)
    total = time.perf_counter() - t0
    print(f"\nreport: {report}\nwall time: {total:.0f} s")
    (cfg.out / "demo.json").write_text(json.dumps({"wall_seconds": total, "rows": [
        {k: v for k, v in r.items() if k != "samples"} for r in rows]}, indent=1))
    return 0 if all(r["fits"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
