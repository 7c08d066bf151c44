"""Who may add, remove and list instances; the Authorization scheme in any case; which upstream URLs
are accepted (validation and --allowed-upstreams); 4xx error types; the sidecar's status in
GET /instances. Each against a real router in front of real HTTP upstreams."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest

from block.openai_api.errors import error_type
from block.router.config import RouterConfig
from tests.router.servers import FakeUpstream, Served, bound_socket, router, upstreams
from tests.router.test_forecasts import FakeSidecar


def _error(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def _closed_port_url() -> str:
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


async def test_admin_needs_the_api_key_when_no_admin_token_is_set() -> None:
    fakes = [FakeUpstream(), FakeUpstream()]
    async with upstreams(*fakes) as ups, router([ups[0].url], api_key="k1") as (app, url):
        first = ups[0].url.removeprefix("http://")
        async with httpx.AsyncClient(timeout=5) as c:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic k1"}):
                r = await c.post(url + "/instances", json={"url": ups[1].url}, headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
                assert _error(r)["type"] == "AuthenticationError"
                r = await c.delete(url + f"/instances/{first}", headers=headers)
                assert r.status_code == 401
                r = await c.get(url + "/instances", headers=headers)  # it shows upstream addresses
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert set(app.pool.instances) == {first}

            r = await c.post(
                url + "/instances", json={"url": ups[1].url}, headers={"authorization": "bearer k1"}
            )
            assert r.status_code == 201
            r = await c.get(url + "/instances", headers={"authorization": "BEARER k1"})
            assert r.status_code == 200 and len(r.json()["instances"]) == 2
            r = await c.delete(url + f"/instances/{first}", headers={"authorization": "Bearer k1"})
            assert r.status_code == 200 and first not in app.pool.instances


async def test_admin_token_and_api_key_each_have_their_reach() -> None:
    fakes = [FakeUpstream(), FakeUpstream()]
    async with upstreams(*fakes) as ups, router([ups[0].url], api_key="k1", admin_token="adm") as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            # The API key reads the listing but may not change the fleet when an admin token is set.
            assert (
                await c.get(url + "/instances", headers={"authorization": "Bearer k1"})
            ).status_code == 200
            assert (
                await c.get(url + "/instances", headers={"authorization": "Bearer adm"})
            ).status_code == 200
            r = await c.post(
                url + "/instances", json={"url": ups[1].url}, headers={"authorization": "Bearer k1"}
            )
            assert r.status_code == 401
            r = await c.post(
                url + "/instances", json={"url": ups[1].url}, headers={"authorization": "Bearer adm"}
            )
            assert r.status_code == 201
            # The admin token is not an API key.
            body = {"prompt": "a", "max_tokens": 1}
            r = await c.post(url + "/v1/completions", json=body, headers={"authorization": "Bearer adm"})
            assert r.status_code == 401


async def test_admin_refused_when_no_credential_is_configured() -> None:
    fakes = [FakeUpstream(), FakeUpstream()]
    async with upstreams(*fakes) as ups, router([ups[0].url]) as (app, url):
        first = ups[0].url.removeprefix("http://")
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(url + "/instances", json={"url": ups[1].url})
            assert r.status_code == 403
            error = _error(r)
            assert error["type"] == "PermissionDeniedError"
            assert "--admin-token" in error["message"] and "--allow-admin-without-auth" in error["message"]
            assert (await c.delete(url + f"/instances/{first}")).status_code == 403
            assert set(app.pool.instances) == {first}
            # Reading stays open when nothing is configured (as /metrics).
            r = await c.get(url + "/instances")
            assert r.status_code == 200 and [i["id"] for i in r.json()["instances"]] == [first]


async def test_allow_admin_without_auth_opens_add_and_remove() -> None:
    fakes = [FakeUpstream(), FakeUpstream()]
    async with upstreams(*fakes) as ups, router([ups[0].url], allow_admin_without_auth=True) as (app, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(url + "/instances", json={"url": ups[1].url})
            assert r.status_code == 201
            assert (await c.delete(url + f"/instances/{r.json()['id']}")).status_code == 200
            assert len(app.pool.instances) == 1


async def test_bearer_scheme_is_case_insensitive_for_clients() -> None:
    async with upstreams(FakeUpstream()) as (up,), router([up.url], api_key="k1") as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            body = {"prompt": "a", "max_tokens": 1}
            for scheme in ("bearer", "BEARER", "Bearer", "bEaReR"):
                headers = {"authorization": f"{scheme} k1"}
                assert (await c.post(url + "/v1/completions", json=body, headers=headers)).status_code == 200
                assert (await c.get(url + "/v1/models", headers=headers)).status_code == 200
            for value in ("k1", "Basic k1", "Bearer", "Bearer k", "Bearer k1x"):
                r = await c.post(url + "/v1/completions", json=body, headers={"authorization": value})
                assert r.status_code == 401, value
                assert r.headers["www-authenticate"] == "Bearer" and _error(r)["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("bad_url", "why"),
    [
        ("http://127.0.0.1:99999", "port"),
        ("http://127.0.0.1:0", "port"),
        ("ftp://127.0.0.1:21", "scheme"),
        ("http://user:pw@127.0.0.1:8000", "user"),
        ("http://127.0.0.1:8000/?next=x", "query"),
        ("http://127.0.0.1:8000#x", "query"),
        ("http:///nohost", "host"),
        ("http://bad host:80", "http(s)://"),
    ],
)
async def test_instance_urls_are_validated(bad_url: str, why: str) -> None:
    async with upstreams(FakeUpstream()) as (up,), router([up.url], admin_token="adm") as (app, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            admin = {"authorization": "Bearer adm"}
            r = await c.post(url + "/instances", json={"url": bad_url}, headers=admin)
            assert r.status_code == 400
            error = _error(r)
            assert error["type"] == "BadRequestError" and error["code"] == "invalid_url"
            assert why in error["message"]
            r = await c.post(
                url + "/instances", json={"url": up.url + "/x", "predictor": bad_url}, headers=admin
            )
            assert r.status_code == 400 and "predictor" in _error(r)["message"]
            assert len(app.pool.instances) == 1
    with pytest.raises(ValueError, match="instance URL"):
        RouterConfig(instances=[bad_url])


async def test_allowed_upstreams_restrict_instance_and_predictor_urls() -> None:
    fakes = [FakeUpstream(), FakeUpstream()]
    allowed = ["10.0.0.0/8,127.0.0.0/8", "engine.internal"]
    async with (
        upstreams(*fakes) as ups,
        router([ups[0].url], admin_token="adm", allowed_upstreams=allowed) as (app, url),
    ):
        admin = {"authorization": "Bearer adm"}
        port = ups[1].port
        async with httpx.AsyncClient(timeout=5) as c:
            for outside in (f"http://192.168.1.7:{port}", f"http://localhost:{port}", "http://[::1]:80"):
                r = await c.post(url + "/instances", json={"url": outside}, headers=admin)
                assert r.status_code == 400, outside
                error = _error(r)
                assert error["code"] == "upstream_not_allowed" and "--allowed-upstreams" in error["message"]
            r = await c.post(
                url + "/instances",
                json={"url": ups[1].url, "predictor": "http://evil.example:80"},
                headers=admin,
            )
            assert r.status_code == 400 and _error(r)["code"] == "upstream_not_allowed"
            assert len(app.pool.instances) == 1
            r = await c.post(url + "/instances", json={"url": ups[1].url}, headers=admin)  # 127.0.0.1: inside
            assert r.status_code == 201
        assert await app.pool.wait_ready(2, timeout=5)
    # A listed name is allowed by name, in any case, and never resolved; other names are not.
    names = RouterConfig(allowed_upstreams=allowed).upstream_allow_list()
    assert names.allows("ENGINE.internal") and names.allows("engine.internal.")
    assert not names.allows("other.internal") and not names.allows("localhost")


def test_allowed_upstreams_apply_to_configured_urls() -> None:
    allowed = ["10.0.0.0/8"]
    assert RouterConfig(instances=["http://10.1.2.3:8000/"], allowed_upstreams=allowed).instances == [
        "http://10.1.2.3:8000"
    ]
    with pytest.raises(ValueError, match="not in --allowed-upstreams"):
        RouterConfig(instances=["http://10.1.2.3:8000", "http://127.0.0.1:8000"], allowed_upstreams=allowed)
    with pytest.raises(ValueError, match="not in --allowed-upstreams"):
        RouterConfig(
            instances=["http://10.1.2.3:8000"], predictors=["http://1.2.3.4:9"], allowed_upstreams=allowed
        )
    with pytest.raises(ValueError, match="not in --allowed-upstreams"):
        RouterConfig.build(
            instances=["http://10.1.2.3:8000"], standby=["http://h:9"], allowed_upstreams=allowed
        )
    with pytest.raises(ValueError, match="not a CIDR"):
        RouterConfig(instances=["http://10.1.2.3:8000"], allowed_upstreams=["10.0.0.0/33"])
    with pytest.raises(ValueError, match="must not be empty"):
        RouterConfig(instances=["http://10.1.2.3:8000"], api_key="")


def test_yaml_allowed_upstreams_as_a_string(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "router.yaml"
    path.write_text("instance: http://10.0.0.1:8000\nallowed-upstreams: 10.0.0.0/8, gpu-1\n")
    cfg = RouterConfig.build(path)
    assert cfg.upstream_allow_list().allows("10.9.9.9") and cfg.upstream_allow_list().allows("GPU-1")
    path.write_text("instance: http://10.0.0.1:8000\nallowed-upstreams: [192.168.0.0/16]\n")
    with pytest.raises(ValueError, match="not in --allowed-upstreams"):
        RouterConfig.build(path)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--instance", "http://127.0.0.1:99999"], "port in 1..65535"),
        (["--instance", "ftp://127.0.0.1:21"], "scheme http or https"),
        (
            ["--instance", "http://10.0.0.1:80", "--allowed-upstreams", "127.0.0.0/8"],
            "not in --allowed-upstreams",
        ),
        (["--instance", "http://127.0.0.1:80", "--allowed-upstreams", "nope/8"], "not a CIDR"),
    ],
)
def test_cli_refuses_bad_upstreams_in_one_line(args: list[str], says: str) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "from block.cli import app; app()", "router", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error:")
    assert time.monotonic() - started < 60


async def test_conflict_is_a_client_error_type() -> None:
    async with upstreams(FakeUpstream()) as (up,), router([up.url], admin_token="adm") as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(
                url + "/instances", json={"url": up.url}, headers={"authorization": "Bearer adm"}
            )
            assert r.status_code == 409
            assert _error(r)["type"] == "ConflictError"
    assert all(
        error_type(s) not in ("InternalServerError", "ServiceUnavailableError") for s in range(400, 500)
    )
    assert error_type(500) == "InternalServerError" and error_type(404) == "NotFoundError"


async def test_instances_show_whether_the_sidecar_answers() -> None:
    sidecar = FakeSidecar(e2e_s=1.0)
    served = await Served(sidecar).start()
    dead_predictor = _closed_port_url()
    try:
        async with (
            upstreams(FakeUpstream(), FakeUpstream(), FakeUpstream()) as ups,
            router(
                [u.url for u in ups],
                policy="block",
                predictors=[served.url, dead_predictor, dead_predictor],
                deadline_ms=500,
            ) as (app, url),
        ):
            ids = [u.url.removeprefix("http://") for u in ups]
            async with httpx.AsyncClient(timeout=5) as c:

                async def rows() -> dict[str, dict]:
                    listing = (await c.get(url + "/instances")).json()["instances"]
                    return {i["id"]: i for i in listing}

                # Without traffic, the health loop's idle probe finds the dead sidecar within seconds.
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    listing = await rows()
                    if listing[ids[0]]["predictor_healthy"] and listing[ids[1]]["predictor_healthy"] is False:
                        break
                    await asyncio.sleep(0.05)
                assert listing[ids[0]]["predictor_healthy"] is True
                assert listing[ids[0]]["predictor_last_error"] is None
                assert listing[ids[1]]["predictor_healthy"] is False
                assert listing[ids[1]]["predictor_last_error"]

                # With traffic, the forecasts and notices say it: the live sidecar stops answering.
                await served.stop()
                for _ in range(3):
                    r = await c.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 1})
                    assert r.status_code == 200
                deadline = time.monotonic() + 5
                while (await rows())[ids[0]][
                    "predictor_healthy"
                ] is not False and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                row = (await rows())[ids[0]]
                assert row["predictor_healthy"] is False and row["predictor_last_error"]
        assert len(app.pool.instances) == 3
    finally:
        await served.stop()


async def test_instances_without_sidecar_report_null() -> None:
    async with upstreams(FakeUpstream()) as (up,), router([up.url]) as (_, url):  # noqa: SIM117
        async with httpx.AsyncClient(timeout=5) as c:
            row = (await c.get(url + "/instances")).json()["instances"][0]
            assert row["predictor_healthy"] is None and row["predictor_last_error"] is None


async def test_provisioned_instance_outside_the_allow_list_is_refused_and_given_back(tmp_path) -> None:  # noqa: ANN001
    from block.router.app import RouterApp
    from tests.provision.test_router_provision import metric, wait_for
    from tests.router.servers import count_words

    outside = "http://192.0.2.1:8000"  # TEST-NET-1: refused before any connection is tried
    released = tmp_path / "released.txt"
    config = RouterConfig.build(
        instances=[],
        allowed_upstreams=["127.0.0.0/8"],
        provision="preemptive",
        slo_e2e=5.0,
        min_instances=1,
        max_instances=1,
        provider="command",
        scale_up_cmd=f"echo {outside}",
        scale_down_cmd=f"printf '%s\\n' >> {released}",
        health_interval=0.1,
        provision_interval_s=0.05,
    )
    app = RouterApp(config, count_tokens=count_words)
    served = await Served(app).start()
    try:
        await wait_for(lambda: released.exists(), 10, "the scale-down hook for the refused instance")
        # the hook has written, the failed scale-up is counted once its task is over
        await wait_for(lambda: app.autoscaler.requested == 0, 10, "the failed scale-up to finish")
        assert released.read_text().split() == [outside]
        assert app.pool.instances == {}
        async with httpx.AsyncClient(timeout=10) as c:
            text = (await c.get(served.url + "/metrics")).text
        assert metric(text, "block_router_provision_failures_total", action="scale_up") >= 1
    finally:
        await served.stop()
