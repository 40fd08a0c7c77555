"""The agent loop: register or resume, lease, measure, report; never lose a measurement.

    agent = Agent(AgentConfig(server=..., token=..., name="pixel7", backend="android-litert"), backend)
    agent.run()

- Start: an unknown device is registered (needs the admin token); a known one is resumed with a
  device heartbeat carrying fresh facts (agent or admin token). The admin token is kept for the
  session rather than swapping to the rotated agent token, so agents sharing a device don't
  invalidate each other's tokens.
- Each job: a heartbeat thread extends the lease every ``lease_seconds / 3`` while measuring; the
  result (or the failure, with the tool's output) is appended to the spool with its idempotency
  key ``<job>:<attempt>:<uuid>`` *before* it is posted; delivered records are marked sent.
- Server unreachable: exponential backoff (with jitter) up to ``max_backoff_s``; the spool is
  resent before any new lease. A 4xx on a result (job failed for good, gone) is final: logged, dropped.
- Token refused (401/403: the device was re-registered, rotating its token, while a job was measured): the
  record stays in the spool, unsent, and the agent stops with an error that says so; started again with the
  device's current token, it sends the spool before it leases anything.
- SIGTERM/SIGINT: finish the current job, report it, exit. A second signal releases the job
  (back to the queue, no attempt counted) and exits at once.
- ``lease_batch`` > 1: up to that many jobs per lease; while they wait and are measured one batched
  heartbeat extends all their leases, and their results go back in one call (all stored or none),
  each spooled first as above. A server without the batched routes (404/405) gets the single-job calls;
  a batch it refuses (409/422) is sent again one result at a time, so each gets its own answer. After a
  signal, the jobs of the batch not measured yet are released.
- A batch is measured in one session where the backend can (the CPU and GPU profilers: interleaved rounds,
  as ``budgetnas profile`` measures a LUT; one overhead and reference workload for all, and steadier minima
  than one job at a time, bench/results/lut_fidelity); if that fails, each job is measured alone and a bad
  job fails alone.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from budgetnas.core.errors import BudgetNASError, ServerError, ServerRefusedError, ServerUnreachableError
from budgetnas.core.text import make_printable
from budgetnas.device_agents.backends import Backend, JobSpec, Measured
from budgetnas.device_agents.rest import Rest
from budgetnas.device_agents.spool import Spool

log = logging.getLogger("budgetnas.agent")


@dataclass
class AgentConfig:
    server: str
    token: str
    name: str
    backend: str
    lease_seconds: float = 60.0
    poll_s: float = 2.0
    max_backoff_s: float = 15.0
    idle_exit_s: float | None = None  # exit after this long without a job (and nothing spooled)
    max_jobs: int | None = None
    spool: str | None = None
    device_heartbeat_s: float = 30.0
    lease_batch: int = 1  # jobs per lease, reported in one call where the server has batches


NO_BATCHES = (404, 405)  # what a server without /v1/jobs/heartbeat and /v1/jobs/results answers there


class _Abort(Exception):
    """Raised in the main thread by a second signal: release the job and leave."""


class _LeaseKeeper(threading.Thread):
    """Extends one job's lease while it is measured; notes (and logs) a lost lease."""

    def __init__(self, rest: Rest, job_id: int, lease_seconds: float, lease_id: str | None) -> None:
        super().__init__(daemon=True, name=f"lease-{job_id}")
        self.rest, self.job_id, self.lease_seconds, self.lease_id = rest, job_id, lease_seconds, lease_id
        self.done = threading.Event()
        self.lost = False
        self.beats = 0

    def run(self) -> None:
        while not self.done.wait(max(self.lease_seconds / 3.0, 0.2)):
            try:
                self.rest.job_heartbeat(self.job_id, self.lease_seconds, self.lease_id)
                self.beats += 1
            except ServerRefusedError as exc:
                if not self.lost:
                    log.warning("job %s: lease lost (%s); the result is still sent", self.job_id, exc)
                self.lost = True
            except ServerUnreachableError:
                pass  # the result goes to the spool anyway

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


class _BatchLeaseKeeper(threading.Thread):
    """Extends the leases of a batch's jobs still held (waiting, measuring, or measured and not yet
    reported) in one call per round, or one call per job on a server without batches."""

    def __init__(self, agent: Agent, leases: dict[int, str | None], lease_seconds: float) -> None:
        super().__init__(daemon=True, name=f"leases-{min(leases)}+{len(leases) - 1}")
        self.agent, self.lease_seconds = agent, lease_seconds
        self.held = dict(leases)
        self.lost: set[int] = set()
        self.beats = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def drop(self, job_id: int) -> None:
        with self._lock:
            self.held.pop(job_id, None)

    def _lose(self, job_id: int, why: str) -> None:
        if job_id not in self.lost:
            log.warning("job %s: lease lost (%s); the result is still sent", job_id, why)
        self.lost.add(job_id)

    def _beat(self) -> None:
        rest, agent = self.agent.rest, self.agent
        with self._lock:
            leases = [(j, lid) for j, lid in self.held.items() if j not in self.lost]
        batchable = [(j, lid) for j, lid in leases if lid is not None]
        if agent.batches is not False and len(batchable) > 1:
            try:
                for out in rest.job_heartbeats(batchable, self.lease_seconds):
                    if "lost" in out:
                        self._lose(int(out["id"]), str(out["lost"]))
                agent.batches = True
                leases = [(j, lid) for j, lid in leases if lid is None]
            except ServerRefusedError as exc:
                if exc.status not in NO_BATCHES:
                    raise
                agent.batches = False
        for job_id, lease_id in leases:
            try:
                rest.job_heartbeat(job_id, self.lease_seconds, lease_id)
            except ServerRefusedError as exc:
                self._lose(job_id, str(exc))

    def run(self) -> None:
        while not self.done.wait(max(self.lease_seconds / 3.0, 0.2)):
            try:
                self._beat()
                self.beats += 1
            except ServerRefusedError as exc:
                log.warning("lease heartbeat refused: %s", exc)
            except ServerUnreachableError:
                pass  # the results go to the spool anyway

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


def default_spool(name: str, backend: str) -> Path:
    from budgetnas.profiler.artifacts import default_cache_root

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{name}-{backend}")
    return default_cache_root() / "agent" / f"spool-{safe}.jsonl"


class Agent:
    def __init__(self, config: AgentConfig, backend: Backend, rest: Rest | None = None) -> None:
        self.config, self.backend = config, backend
        self.rest = rest or Rest(config.server, config.token)
        self.spool = Spool(config.spool or default_spool(config.name, config.backend))
        self.stop = threading.Event()
        self._signals = 0
        self._measuring = False
        self._backoff = 0.0
        self.done = 0
        self.failed = 0
        self.batches: bool | None = None  # whether the server has the batched job routes (None: not asked yet)

    # ---- signals and waiting -------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        self.stop.set()
        if self._signals == 1:
            log.info("signal %s: finishing the current job, then exiting", signum)
        elif self._measuring:
            raise _Abort()

    def install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    def _wait_backoff(self, why: str) -> None:
        self._backoff = min(self.config.max_backoff_s, max(0.5, self._backoff * 2))
        delay = self._backoff * random.uniform(0.75, 1.25)
        log.warning("%s; retrying in %.1f s", why, delay)
        self.stop.wait(delay)

    # ---- start ------------------------------------------------------------------------------------
    def register_or_resume(self) -> None:
        facts = self.backend.facts()
        while not self.stop.is_set():
            try:
                names = {d["name"] for d in self.rest.devices()}
                if self.config.name in names:
                    self.rest.device_heartbeat(self.config.name, facts)
                    log.info("device %s resumed", self.config.name)
                else:
                    self.rest.register(self.config.name, facts)
                    log.info("device %s registered", self.config.name)
                self._backoff = 0.0
                return
            except ServerUnreachableError as exc:
                self._wait_backoff(str(exc))
            except ServerRefusedError as exc:
                if exc.status in (401, 403):
                    raise ServerError(f"device {self.config.name!r}: the token is not accepted ({exc}); "
                                      "register the device with the admin token (`budgetnas device register`) "
                                      "and pass the agent token it prints") from None
                raise

    # ---- the spool ---------------------------------------------------------------------------------
    def _refused(self, exc: ServerRefusedError) -> ServerError:
        """The error that stops an agent whose token the server no longer accepts (what is spooled stays)."""
        n = len(self.spool.pending())
        kept = f"; {n} record(s) stay in the spool {self.spool.path} and are sent first" if n else ""
        return ServerError(f"device {self.config.name!r}: the server no longer accepts this agent's token ({exc})"
                           f"{kept}; run the agent again with the device's current token")

    def _post(self, rec: dict[str, Any]) -> bool:
        """Deliver one spooled record; False when the server is unreachable (kept for later)."""
        try:
            if rec["kind"] == "result":
                out = self.rest.result(rec["job"], rec["body"])
                log.info("job %s: result %s", rec["job"], "stored" if out.get("stored") else "already stored")
            else:
                b = rec["body"]  # spooled without a lease_id (an older agent): 422, dropped; the lease expires
                out = self.rest.fail(rec["job"], b["error"], b.get("output", ""), b.get("lease_id"))
                log.info("job %s: failure reported (now %s)", rec["job"], out.get("state"))
        except ServerUnreachableError:
            return False
        except ServerRefusedError as exc:
            if exc.status in (401, 403):  # the token was refused, not the record: keep it for valid credentials
                log.error("job %s: %s kept unsent in the spool %s: the token was refused (%s)",
                          rec["job"], rec["kind"], self.spool.path, exc)
                raise self._refused(exc) from None
            log.warning("job %s: %s dropped: %s", rec["job"], rec["kind"], exc)
        self.spool.mark_sent(rec["key"])
        return True

    def flush_spool(self) -> bool:
        """Resend everything pending; True when nothing is left."""
        pending = self.spool.pending()
        for rec in pending:
            if not self._post(rec):
                return False
        if pending:
            self.spool.compact()
        return True

    # ---- one job ---------------------------------------------------------------------------------
    def _measure(self, job: JobSpec, key: str, lease_id: str | None, lease: Callable[[], tuple[int, bool]],
                 measured: Measured | None = None) -> tuple[str, dict[str, Any]]:
        """The record of one measurement: ("result", body) or ("fail", body); ``_Abort`` passes through.
        ``lease``: the lease keeper's (heartbeats sent, lease lost) for the result's environment.
        ``measured``: the job's measurement when it was taken together with others."""
        self._measuring = True
        try:
            m = measured if measured is not None else self.backend.measure(job)
        except _Abort:
            raise
        except (BudgetNASError, Exception) as exc:  # a bad job must not stop the agent
            output = getattr(exc, "output", "") or traceback.format_exc()
            # the server refuses control characters (ANSI colours, NUL): send them as U+FFFD, not lose the failure
            body = {"error": make_printable(f"{type(exc).__name__}: {exc}"[:10_000], multiline=True),
                    "output": make_printable(output[-1_000_000:], multiline=True), "lease_id": lease_id}
            self.failed += 1
            log.warning("job %s: failed: %s", job.id, body["error"])
            return "fail", body
        finally:
            self._measuring = False
        beats, lost = lease()
        self.done += 1
        return "result", {"idempotency_key": key, "stats": m.stats.to_dict(),
                          "environment": {**m.environment, "agent": self.config.name,
                                          "lease_heartbeats": beats, "lease_lost": lost}}

    def _release(self, job_id: int, lease_id: str | None) -> None:
        try:
            self.rest.release(job_id, lease_id)
            log.info("job %s: released", job_id)
        except ServerError as exc:
            log.warning("job %s: release failed (%s); its lease will expire", job_id, exc)

    @staticmethod
    def _key(job: JobSpec, job_json: dict[str, Any]) -> str:
        return f"{job.id}:{job_json.get('attempts', 0)}:{uuid.uuid4().hex}"

    def process(self, job_json: dict[str, Any]) -> None:
        job = JobSpec.from_json(job_json)
        key = self._key(job, job_json)
        log.info("job %s (%s %s): measuring", job.id, job.kind, job.key or job.arch)
        lease_id = job_json.get("lease_id")  # only this lease's holder may extend or release it
        keeper = _LeaseKeeper(self.rest, job.id, self.config.lease_seconds, lease_id)
        keeper.start()
        try:
            kind, body = self._measure(job, key, lease_id, lambda: (keeper.beats, keeper.lost))
        except _Abort:
            keeper.stop()
            self._release(job.id, lease_id)
            return
        finally:
            keeper.stop()
        self.spool.add(kind, job.id, key, body)
        if not self._post({"kind": kind, "job": job.id, "key": key, "body": body}):
            log.warning("job %s: server unreachable; %s spooled in %s", job.id, kind, self.spool.path)

    def process_batch(self, jobs_json: list[dict[str, Any]]) -> None:
        """Several leased jobs: measured one after another, their leases kept, the results sent in one call."""
        specs = [(JobSpec.from_json(j), j) for j in jobs_json]
        keeper = _BatchLeaseKeeper(self, {job.id: j.get("lease_id") for job, j in specs}, self.config.lease_seconds)
        keeper.start()
        results: list[dict[str, Any]] = []
        try:
            try:
                together = self._measure_together([job for job, _ in specs])
            except _Abort:
                for job, job_json in specs:
                    self._release(job.id, job_json.get("lease_id"))
                return
            for n, (job, job_json) in enumerate(specs):
                if self.stop.is_set() and job.id not in together:  # a signal: what is not measured yet goes back
                    for later, later_json in specs[n:]:
                        self._release(later.id, later_json.get("lease_id"))
                    break
                key, lease_id = self._key(job, job_json), job_json.get("lease_id")
                log.info("job %s (%s %s): measuring (%d of %d)", job.id, job.kind, job.key or job.arch, n + 1,
                         len(specs))
                def lease(j: int = job.id) -> tuple[int, bool]:
                    return keeper.beats, j in keeper.lost

                try:
                    kind, body = self._measure(job, key, lease_id, lease, together.get(job.id))
                except _Abort:
                    for later, later_json in specs[n:]:
                        self._release(later.id, later_json.get("lease_id"))
                    break
                self.spool.add(kind, job.id, key, body)
                rec = {"kind": kind, "job": job.id, "key": key, "body": body}
                if kind == "result":
                    results.append(rec)
                    continue
                keeper.drop(job.id)
                if not self._post(rec):
                    log.warning("job %s: server unreachable; failure spooled in %s", job.id, self.spool.path)
        finally:
            keeper.stop()
        if results and not self._post_results(results):
            log.warning("server unreachable; %d result(s) spooled in %s", len(results), self.spool.path)

    def _measure_together(self, jobs: list[JobSpec]) -> dict[int, Measured]:
        """The batch measured in one session where the backend can (``Backend.measure_together``); {}
        when it cannot or anything in it fails: then each job is measured alone, its failure its own."""
        self._measuring = True
        try:
            return self.backend.measure_together(jobs)
        except _Abort:
            raise
        except Exception as exc:  # one bad job must not fail the others
            log.info("measuring %d jobs together failed (%s: %s); measuring each alone", len(jobs),
                     type(exc).__name__, exc)
            return {}
        finally:
            self._measuring = False

    def _post_results(self, recs: list[dict[str, Any]]) -> bool:
        """Deliver spooled results, in one call where the server can; False when it is unreachable."""
        if self.batches is not False and len(recs) > 1:
            try:
                outs = self.rest.results([(r["job"], r["body"]) for r in recs])
            except ServerUnreachableError:
                return False
            except ServerRefusedError as exc:
                if exc.status in (401, 403):
                    log.error("%d result(s) kept unsent in the spool %s: the token was refused (%s)", len(recs),
                              self.spool.path, exc)
                    raise self._refused(exc) from None
                if exc.status in NO_BATCHES:
                    self.batches = False
                else:  # refused whole: one at a time, each gets its own (final) answer
                    log.info("batch of %d results refused (%s); sending them one by one", len(recs), exc)
            else:
                self.batches = True
                for rec, out in zip(recs, outs, strict=True):
                    log.info("job %s: result %s", rec["job"], "stored" if out.get("stored") else "already stored")
                    self.spool.mark_sent(rec["key"])
                return True
        return all(self._post(rec) for rec in recs)

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve jobs until stopped (signal, ``max_jobs``, or ``idle_exit_s``); returns jobs measured."""
        self.install_signals()
        idle_since = time.monotonic()
        last_beat = 0.0
        try:
            self.register_or_resume()
            while not self.stop.is_set():
                if not self.flush_spool():
                    self._wait_backoff("server unreachable; results stay spooled")
                    continue
                if self.config.max_jobs is not None and self.done + self.failed >= self.config.max_jobs:
                    break
                now = time.monotonic()
                try:
                    if now - last_beat >= self.config.device_heartbeat_s:
                        self.rest.device_heartbeat(self.config.name)
                        last_beat = now
                    jobs = self.rest.lease(self.config.name, self.config.backend, self.config.lease_seconds,
                                           max_jobs=self.config.lease_batch)
                except ServerUnreachableError as exc:
                    self._wait_backoff(str(exc))
                    continue
                except ServerRefusedError as exc:
                    if exc.status in (401, 403):
                        raise self._refused(exc) from None
                    raise
                self._backoff = 0.0
                if not jobs:
                    if self.config.idle_exit_s is not None and now - idle_since >= self.config.idle_exit_s:
                        log.info("no jobs for %.0f s; exiting", self.config.idle_exit_s)
                        break
                    self.stop.wait(self.config.poll_s)
                    continue
                if len(jobs) > 1:
                    self.process_batch(jobs)
                else:
                    for job in jobs:
                        self.process(job)
                idle_since = time.monotonic()
            if self.flush_spool():
                self.spool.compact()
        finally:
            self.backend.close()
            self.rest.close()
        log.info("agent %s: %d measured, %d failed", self.config.name, self.done, self.failed)
        return self.done
