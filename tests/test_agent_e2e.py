"""End to end, all on loopback: ``budgetnas serve`` and ``budgetnas agent`` subprocesses.

- a campaign completed by 3 agents together, every key measured exactly once;
- an agent SIGKILLed mid-job: its lease expires, another agent finishes, one result stored;
- the server stopped for 20 s while agents measure: nothing lost, nothing duplicated;
- an android agent against the loopback ADB phone: a small campaign with real LiteRT timings.

Cheap settings: the nb201 space (22 small keys), torch-cpu with the quick protocol, leases of a
few seconds. Agents and server share one artifact cache (BUDGETNAS_CACHE) under tmp_path.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from budgetnas.spaces import get_space
from tests.adb_loopback import LoopbackPhone

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
ADMIN = "e2e-admin-token"
BIN = [sys.executable, "-m", "budgetnas"]
NB201_KEYS = len(get_space("nb201").all_block_keys())  # 28: ops (in their fusion contexts), add and zeros per stage, stem, resblocks, head


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``budgetnas serve`` on 127.0.0.1, stoppable and restartable on the same port and database."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.port, self.env, self.tmp = free_port(), env, tmp
        self.db = f"sqlite:///{tmp / 'lut.db'}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)

    def start(self) -> None:
        log = (self.tmp / "server.log").open("ab")
        self.proc = subprocess.Popen([*BIN, "serve", "--db", self.db, "--port", str(self.port), "--log-level",
                                      "warning"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, (self.tmp / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = self.http.post(path, json=body)
        assert r.status_code < 300, r.text
        return r.json()

    def get(self, path: str) -> Any:
        r = self.http.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    def register(self, name: str) -> str:
        return str(self.post("/v1/devices", {"name": name, "facts": {}})["token"])

    def campaign(self, device: str, backend: str, space: dict[str, Any] | None = None) -> int:
        out = self.post("/v1/campaigns", {"space": space or {"space": "nb201"}, "device": device,
                                          "backend": backend, "batch": 1, "threads": 1})
        return int(out["lut_id"])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, BUDGETNAS_ADMIN_TOKEN=ADMIN, BUDGETNAS_CACHE=str(tmp_path / "cache"),
                BUDGETNAS_MAX_ATTEMPTS="5", HOME=str(tmp_path), PYTHONUNBUFFERED="1",
                PYTHONPATH=str(Path(__file__).resolve().parents[1]))


@pytest.fixture
def server(tmp_path: Path, env: dict[str, str]) -> Iterator[Server]:
    srv = Server(tmp_path, env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        srv.http.close()


class AgentProc:
    def __init__(self, server: Server, env: dict[str, str], tmp: Path, name: str, token: str, backend: str,
                 tag: str, *extra: str) -> None:
        self.log_path = tmp / f"agent-{tag}.log"
        self.proc = subprocess.Popen(
            [*BIN, "agent", "--server", server.url, "--token", token, "--name", name, "--backend", backend,
             "--lease-seconds", "3", "--poll", "0.3", "--max-backoff", "2", "--spool", str(tmp / f"spool-{tag}.jsonl"),
             *extra], env=env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def stored(self) -> list[int]:
        return [int(j) for j in re.findall(r"job (\d+): result stored", self.log)]

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"agent did not exit:\n{self.log[-3000:]}") from None

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log)
            if m:
                return m
            assert self.proc.poll() is None or time.monotonic() < deadline, self.log[-3000:]
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.log[-3000:]}"
            time.sleep(0.05)


def assert_complete_once(server: Server, lut: int, agents: list[AgentProc], n_keys: int) -> list[dict[str, Any]]:
    info = server.get(f"/v1/luts/{lut}")
    entries = server.get(f"/v1/luts/{lut}/entries")["entries"]
    assert info["status"] == "complete" and info["n_measured"] == n_keys, info
    assert len(entries) == n_keys and len({e["key"] for e in entries}) == n_keys
    stored = [j for a in agents for j in a.stored()]
    assert len(stored) == n_keys and len(set(stored)) == n_keys, stored  # each job stored exactly once
    # >= 0: a skip connection costs about the per-call overhead the protocol subtracts
    assert all(e["median_ms"] >= 0 and e["count"] >= 1 for e in entries)
    return list(entries)


CPU = ["--quick", "--idle-exit", "6"]


def test_three_agents_complete_a_campaign_each_key_once(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    token = server.register("fleet-cpu")
    every = ["--quick", "--protocol", '{"remeasure": 0}']  # no --idle-exit: they run until told to stop
    agents = [AgentProc(server, env, tmp_path, "fleet-cpu", token, "torch-cpu", f"a{i}", *every) for i in range(3)]
    for a in agents:  # all three up before there is work, so each gets a share
        a.wait_for(r"device fleet-cpu resumed", 90)
    lut = server.campaign("fleet-cpu", "torch-cpu")
    deadline = time.monotonic() + 120
    while server.get(f"/v1/luts/{lut}")["status"] != "complete":
        assert time.monotonic() < deadline, server.get(f"/v1/luts/{lut}")
        time.sleep(0.3)
    for a in agents:
        a.proc.send_signal(signal.SIGTERM)
    for a in agents:
        assert a.wait(60) == 0, a.log[-2000:]
    assert_complete_once(server, lut, agents, NB201_KEYS)
    assert all(a.stored() for a in agents), [len(a.stored()) for a in agents]  # all three took part
    assert server.get(f"/v1/luts/{lut}")["progress"]["failed"] == 0


def test_sigkilled_agent_lease_expires_and_another_finishes(server: Server, env: dict[str, str],
                                                             tmp_path: Path) -> None:
    # the agent token as a user gets it: `budgetnas device register` prints it last
    out = subprocess.run([*BIN, "device", "register", "--name", "kill-cpu", "--server", server.url, "--token", ADMIN],
                         env=server.env, capture_output=True, text=True, timeout=60, check=True)
    token = out.stdout.strip().splitlines()[-1]
    lut = server.campaign("kill-cpu", "torch-cpu")
    # a slow protocol for the victim so it is surely mid-job when killed
    victim = AgentProc(server, env, tmp_path, "kill-cpu", token, "torch-cpu", "victim", "--quick", "--protocol",
                       '{"min_seconds": 30, "max_seconds": 40, "max_runs": 100000000}')
    job = int(victim.wait_for(r"job (\d+) \(block [^)]*\): measuring", 60).group(1))
    time.sleep(0.5)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    t_kill = time.monotonic()
    rescuer = AgentProc(server, env, tmp_path, "kill-cpu", token, "torch-cpu", "rescuer", *CPU)
    assert rescuer.wait(120) == 0, rescuer.log[-2000:]
    assert job in rescuer.stored()
    # the rescuer could only lease it after the 3 s lease had expired
    assert re.search(rf"job {job} \(block", rescuer.log)
    assert time.monotonic() - t_kill >= 3.0
    assert_complete_once(server, lut, [victim, rescuer], NB201_KEYS)
    jobs_done = server.get(f"/v1/luts/{lut}")["progress"]
    assert jobs_done["done"] == NB201_KEYS and jobs_done["leased"] == 0


def test_server_down_20s_nothing_lost_or_duplicated(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    token = server.register("outage-cpu")
    lut = server.campaign("outage-cpu", "torch-cpu")
    slow = ["--quick", "--idle-exit", "8", "--protocol", '{"min_seconds": 0.6, "max_seconds": 1, "max_runs": 1000000, "remeasure": 0}']
    agents = [AgentProc(server, env, tmp_path, "outage-cpu", token, "torch-cpu", f"o{i}", *slow) for i in range(2)]
    for a in agents:
        a.wait_for(r"job \d+ \(block [^)]*\): measuring", 60)
    server.stop()
    t_down = time.monotonic()
    # measurements finish while the server is down: they are spooled, not lost
    for a in agents:
        a.wait_for(r"server unreachable; result spooled", 30)
    time.sleep(max(0.0, 20.0 - (time.monotonic() - t_down)))
    server.start()
    for a in agents:
        assert a.wait(120) == 0, a.log[-2000:]
    assert_complete_once(server, lut, agents, NB201_KEYS)
    spooled = [ln for i in range(2) for ln in (tmp_path / f"spool-o{i}.jsonl").read_text().splitlines()]
    assert spooled == []  # everything delivered, and the spool compacted at exit
    assert sum(len(re.findall("result spooled", a.log)) for a in agents) >= 2


def test_android_agent_completes_campaign_on_loopback_phone(server: Server, env: dict[str, str],
                                                            tmp_path: Path) -> None:
    pytest.importorskip("litert_torch", reason="the .tflite of a block needs litert-torch (the tflite extra)")
    from tests.test_adb_loopback import standin_binary

    token = server.register("pixel-loopback")
    lut = server.campaign("pixel-loopback", "android-litert")
    with LoopbackPhone(tmp_path / "phone") as phone:
        agent = AgentProc(server, env, tmp_path, "pixel-loopback", token, "android-litert", "phone",
                          "--adb", phone.address, "--benchmark-binary", str(standin_binary(tmp_path)),
                          "--quick", "--idle-exit", "5", "--cores", "0", "--protocol", '{"rounds": 1}')
        assert agent.wait(170) == 0, agent.log[-3000:]
        entries = assert_complete_once(server, lut, [agent], NB201_KEYS)
        runs = [c for c in phone.shell_commands if "--graph=" in c]
        assert len(runs) >= NB201_KEYS and all(c.split("&& ")[1].startswith("taskset 1 ") for c in runs)
    by_key = {e["key"]: e["median_ms"] for e in entries}
    # real timings: a 3x3 conv on 32x32x16 costs more than an addition on the same tensor
    assert by_key["nor_conv_3x3-input:32x32x16-output:32x32x16"] > by_key["add-input:32x32x16-output:32x32x16"]
    dev = {d["name"]: d for d in server.get("/v1/devices")["devices"]}["pixel-loopback"]
    assert dev["facts"]["model"] == "Pixel 7 (loopback)" and dev["facts"]["governor"] == "schedutil"
    env_rec = server.get(f"/v1/luts/{lut}")["meta"]["environment"]
    assert env_rec["format"] == "current" and env_rec["phone"]["abi"] == "arm64-v8a"


def test_android_job_fails_with_output_and_agent_keeps_running(server: Server, env: dict[str, str],
                                                               tmp_path: Path) -> None:
    pytest.importorskip("litert_torch", reason="the .tflite of a block needs litert-torch (the tflite extra)")
    junk = tmp_path / "benchmark_model"
    junk.write_text("#!/bin/sh\necho 'benchmark_model: unknown flag --graph (built for another ABI?)'\nexit 3\n")
    with LoopbackPhone(tmp_path / "phone") as phone:
        # the admin token: the agent registers its (unknown) device itself, with the phone's facts
        agent = AgentProc(server, env, tmp_path, "pixel-broken", ADMIN, "android-litert", "broken",
                          "--adb", phone.address, "--benchmark-binary", str(junk), "--quick", "--max-jobs", "2")
        agent.wait_for(r"device pixel-broken registered", 90)
        lut = server.campaign("pixel-broken", "android-litert")
        assert agent.wait(120) == 0, agent.log[-3000:]
    dev = {d["name"]: d for d in server.get("/v1/devices")["devices"]}["pixel-broken"]
    assert dev["facts"]["soc"] == "GS201" and dev["facts"]["benchmark_binary"] == "benchmark_model"
    assert len(re.findall(r"job \d+: failed: BenchmarkRunError: .*no timings.*exit status 3", agent.log)) == 2
    assert len(re.findall(r"job \d+: failure reported \(now queued\)", agent.log)) == 2  # back to the queue
    progress = server.get(f"/v1/luts/{lut}")["progress"]
    assert progress["done"] == 0 and progress["queued"] == NB201_KEYS


def test_sigterm_finishes_the_job_and_a_second_signal_releases_it(server: Server, env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    token = server.register("term-cpu")
    lut = server.campaign("term-cpu", "torch-cpu")
    slow = ["--quick", "--protocol", '{"min_seconds": 4, "max_seconds": 6, "max_runs": 100000000, "remeasure": 0}']
    finisher = AgentProc(server, env, tmp_path, "term-cpu", token, "torch-cpu", "finisher", *slow)
    leaver = AgentProc(server, env, tmp_path, "term-cpu", token, "torch-cpu", "leaver", *slow)
    job_f = int(finisher.wait_for(r"job (\d+) \(block [^)]*\): measuring", 60).group(1))
    job_l = int(leaver.wait_for(r"job (\d+) \(block [^)]*\): measuring", 60).group(1))
    finisher.proc.send_signal(signal.SIGTERM)
    leaver.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    leaver.proc.send_signal(signal.SIGTERM)
    assert finisher.wait(60) == 0 and leaver.wait(60) == 0
    assert finisher.stored() == [job_f]  # finished and reported its job, took no other
    assert f"job {job_l}: released" in leaver.log and leaver.stored() == []
    progress = server.get(f"/v1/luts/{lut}")["progress"]
    assert progress["done"] == 1 and progress["leased"] == 0 and progress["queued"] == NB201_KEYS - 1
    # the job outlived its 3 s lease: the heartbeat thread extended it
    env_rec = server.get(f"/v1/luts/{lut}")["meta"]["environment"]
    assert env_rec["lease_heartbeats"] >= 1 and env_rec["lease_lost"] is False
