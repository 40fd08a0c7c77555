"""The one REST client (``budgetnas.core.http.RestClient``): its error mapping on canned answers, and its users
(the agent's typed calls, supernet accuracy records, the demo) against the app in process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from budgetnas.cli.demo import Demo, Settings
from budgetnas.core.errors import InvalidArgumentError, ServerError, ServerRefusedError, ServerUnreachableError
from budgetnas.core.http import RestClient
from budgetnas.device_agents.rest import Rest
from budgetnas.generator.supernet.records import AccuracyClient, make_records
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN, app_transport

STATS = {"count": 3, "mean_ms": 1.0, "std_ms": 0.1, "median_ms": 1.0, "min_ms": 0.9, "samples_ms": [0.9, 1.0, 1.1]}
Handler = Callable[[httpx.Request], httpx.Response]


def canned(handler: Handler, token: str | None = "tok", base: str = "http://lut.test") -> RestClient:
    return RestClient(base, token, timeout=5, transport=httpx.MockTransport(handler))


# ---- the error mapping ----------------------------------------------------------------------------------
def test_answers_json_text_or_nothing_with_the_token_and_the_base_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/text"):
            return httpx.Response(200, text="a: 1\n", headers={"content-type": "application/x-yaml"})
        if request.url.path.endswith("/empty"):
            return httpx.Response(204)
        return httpx.Response(200, json={"ok": True})

    with canned(handler, base="http://lut.test/prefix/") as c:
        assert c.request("GET", "/v1/x", params={"a": 1}) == {"ok": True}
        assert c.object("POST", "/v1/x", json={"b": 2}) == {"ok": True}
        assert c.request("GET", "/v1/text") == "a: 1\n"
        assert c.request("DELETE", "/v1/empty") is None
    assert str(seen[0].url) == "http://lut.test/prefix/v1/x?a=1"
    assert seen[1].content == b'{"b":2}' and seen[1].headers["authorization"] == "Bearer tok"
    with canned(lambda r: httpx.Response(200, json=dict(r.headers)), token=None) as c:
        assert "authorization" not in c.object("GET", "/v1/x")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_a_4xx_is_final_with_its_status_and_the_servers_detail(status: int) -> None:
    answer = httpx.Response(status, json={"detail": "lut: no such LUT 9"})
    with canned(lambda r: answer) as c, pytest.raises(ServerRefusedError) as got:
        c.request("GET", "/v1/luts/9")
    assert not isinstance(got.value, ServerUnreachableError)
    assert got.value.status == status and got.value.detail == "lut: no such LUT 9"
    assert str(got.value) == f"GET /v1/luts/9: HTTP {status}: lut: no such LUT 9"


@pytest.mark.parametrize("answer", [
    httpx.Response(503, json={"detail": "database unavailable: locked"}),
    httpx.Response(502, text="<html>Bad Gateway</html>"),
    httpx.Response(500, text=""),
])
def test_a_5xx_may_be_retried(answer: httpx.Response) -> None:
    with canned(lambda r: answer) as c, pytest.raises(ServerUnreachableError, match=rf"HTTP {answer.status_code}"):
        c.request("POST", "/v1/jobs/lease", json={})


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                 httpx.RemoteProtocolError("closed")])
def test_no_answer_may_be_retried_and_names_the_server(exc: httpx.HTTPError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with canned(handler) as c, pytest.raises(ServerUnreachableError) as got:
        c.request("GET", "/healthz")
    msg = str(got.value)
    assert msg.startswith("GET /healthz: cannot reach http://lut.test: ") and type(exc).__name__ in msg
    assert len(msg.splitlines()) == 1


def test_answers_that_are_not_what_was_asked_are_server_errors() -> None:
    with canned(lambda r: httpx.Response(200, json=[1, 2])) as c, pytest.raises(ServerError, match="JSON object"):
        c.object("GET", "/v1/x")
    bad_json = httpx.Response(200, content=b"{nope", headers={"content-type": "application/json"})
    with canned(lambda r: bad_json) as c, pytest.raises(ServerError, match="not valid JSON") as got:
        c.request("GET", "/v1/x")
    assert not isinstance(got.value, ServerRefusedError | ServerUnreachableError)


def test_a_server_url_that_is_not_one_is_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="server URL"):
        RestClient("http://[::1")
    with RestClient("localhost:8000") as c, pytest.raises(ServerUnreachableError, match="cannot reach"):
        c.request("GET", "/healthz")  # no scheme: httpx cannot send it (UnsupportedProtocol)


# ---- its users, against the app in process ------------------------------------------------------------------
@pytest.fixture
def transport(client: TestClient) -> httpx.MockTransport:
    return app_transport(client)


def test_the_agents_calls_through_the_app(client: TestClient, transport: httpx.MockTransport) -> None:
    with Rest("http://app", ADMIN, transport=transport) as admin:
        token = admin.register("rig", {"cpu": "x"})["token"]
        admin.call("POST", "/v1/campaigns", {"space": {"space": "nb201"}, "device": "rig", "backend": "ort-cpu"})
    with Rest("http://app", token, transport=transport) as rest:
        assert [d["name"] for d in rest.devices()] == ["rig"]
        assert rest.device_heartbeat("rig", {"os": "linux"})["name"] == "rig"
        jobs = rest.lease("rig", "ort-cpu", 30, max_jobs=4)
        assert len(jobs) == 4 and all(j["lease_id"] for j in jobs)
        a, b, c, d = jobs
        assert rest.job_heartbeat(a["id"], 60, a["lease_id"])["lease_expires"] > a["lease_expires"]
        beats = rest.job_heartbeats([(a["id"], a["lease_id"]), (b["id"], b["lease_id"])], 60)
        assert [x["id"] for x in beats] == [a["id"], b["id"]] and all("lease_expires" in x for x in beats)
        assert rest.result(a["id"], {"idempotency_key": "ka", "stats": STATS})["stored"] is True
        stored = rest.results([(b["id"], {"idempotency_key": "kb", "stats": STATS}),
                               (c["id"], {"idempotency_key": "kc", "stats": STATS})])
        assert [(x["id"], x["stored"]) for x in stored] == [(b["id"], True), (c["id"], True)]
        assert rest.fail(d["id"], "boom", "trace", d["lease_id"])["state"] == "queued"
        again = rest.lease("rig", "ort-cpu", 30)[0]
        assert rest.release(again["id"], again["lease_id"]) == {"id": again["id"], "state": "queued",
                                                                 "attempts": again["attempts"] - 1}
        with pytest.raises(ServerRefusedError) as got:  # a final answer: not retried by the agent
            rest.release(again["id"], again["lease_id"])
        assert got.value.status == 409
        with pytest.raises(ServerRefusedError) as got:
            rest.lease("someone-else", "ort-cpu", 30)
        assert got.value.status in (403, 404)
    with Rest("http://app", "bna_wrong", transport=transport) as rest, pytest.raises(ServerRefusedError) as got:
        rest.lease("rig", "ort-cpu", 30)
    assert got.value.status == 401


def test_accuracy_records_through_the_app(transport: httpx.MockTransport) -> None:
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    with AccuracyClient("http://app", ADMIN, transport=transport) as acc:
        acc.check()
        records = make_records([arch], [71.5], "cifar10", "test")
        assert acc.post("nb201", records) == {"inserted": 1, "updated": 0}
        assert acc.post("nb201", make_records([arch], [72.0], "cifar10", "test")) == {"inserted": 0, "updated": 1}
        got = acc.get(space="nb201", source="test", dataset=None)
        assert got["total"] == 1 and got["records"][0]["value"] == 72.0
    with AccuracyClient("http://app", "wrong", transport=transport) as acc, \
            pytest.raises(ServerRefusedError, match="HTTP 401") as refused:
        acc.post("nb201", records)
    assert refused.value.status == 401


def test_the_demos_calls_through_the_app(tmp_path: Path, transport: httpx.MockTransport) -> None:
    demo = Demo(Settings(out=tmp_path), admin=ADMIN, url="http://app", transport=transport)
    assert demo.wait_healthy(timeout_s=5)
    assert demo.api("POST", "/v1/devices", json={"name": "this-cpu"})["name"] == "this-cpu"
    assert [d["name"] for d in demo.api("GET", "/v1/devices")["devices"]] == ["this-cpu"]
    with pytest.raises(SystemExit, match=r"^demo: GET /v1/luts/99: HTTP 404: "):
        demo.api("GET", "/v1/luts/99")


def test_the_demo_gives_up_on_a_server_that_never_answers(tmp_path: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    demo = Demo(Settings(out=tmp_path), url="http://down", transport=httpx.MockTransport(down))
    assert demo.wait_healthy(timeout_s=0.5) is False
    with pytest.raises(SystemExit, match=r"^demo: GET /v1/devices: cannot reach http://down"):
        demo.api("GET", "/v1/devices")
