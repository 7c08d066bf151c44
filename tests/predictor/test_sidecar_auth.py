"""The sidecar's bearer token (`block predictor --token`) and its forgetting of routed ids that no
snapshot shows, against a real engine."""

from __future__ import annotations

import time

import httpx
import pytest

from block.bearer import bearer_token, matches
from tests.predictor.servers import engine, sidecar_service

TOKEN = "s3cret-token"
BODIES = {
    "/predict": {"prompt_tokens": 100, "expected_output_tokens": 10},
    "/predict_batch": {"requests": [{"prompt_tokens": 100, "expected_output_tokens": 10}]},
    "/routed": {"request_id": "r1", "prompt_tokens": 100, "expected_output_tokens": 10},
    "/finished": {"request_id": "r1"},
}


def bearer_matches(authorization: str, token: str) -> bool:
    return matches(bearer_token(authorization), [token.encode()])


def test_bearer_matches() -> None:
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN) and bearer_matches(f"bearer {TOKEN}", TOKEN)
    assert bearer_matches(f"BEARER  {TOKEN} ", TOKEN)
    for wrong in ("", TOKEN, f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"):
        assert not bearer_matches(wrong, TOKEN), wrong


def test_with_a_token_every_post_needs_it() -> None:
    with engine() as eng, sidecar_service(eng, token=TOKEN) as (service, url), httpx.Client() as c:
        for path, body in BODIES.items():
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
                r = c.post(url + path, json=body, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
                err = r.json()["error"]
                assert err["type"] == "AuthenticationError" and err["code"] == 401 and err["message"]
        assert service.tracker is not None and service.tracker.pending == []  # nothing got in
        for path, body in BODIES.items():
            r = c.post(url + path, json=body, headers={"Authorization": f"bearer {TOKEN}"})
            assert r.status_code == 200, (path, r.text)
        assert c.get(url + "/health").status_code == 200  # open: liveness and scraping need no secret
        assert c.get(url + "/metrics").status_code == 200


def test_routed_ids_no_snapshot_shows_are_forgotten() -> None:
    """3,000 fake /routed moved the forecast by three orders of magnitude and stayed in memory: now
    they leave after --routed-ttl-s (the tracker's forget_after_s) and the forecast comes back."""
    ttl_s = 2.0  # long enough to send them all on a busy machine
    with engine() as eng, sidecar_service(eng, forget_after_s=ttl_s) as (service, url), httpx.Client() as c:
        ask = BODIES["/predict"]
        calm = c.post(url + "/predict", json=ask).json()
        started = time.monotonic()
        for i in range(100):
            body = {"request_id": f"fake{i}", "prompt_tokens": 2000, "expected_output_tokens": 2000}
            assert c.post(url + "/routed", json=body).status_code == 200
        flooded = c.post(url + "/predict", json=ask).json()
        if time.monotonic() - started < ttl_s:  # else the first ones are gone already: no matter
            assert flooded["waiting"] == 100
        assert flooded["waiting"] >= 10 and flooded["e2e_s"] > 10 * calm["e2e_s"]

        tracker = service.tracker
        assert tracker is not None
        deadline = time.monotonic() + 10
        while (tracker.in_flight or tracker.pending) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tracker.in_flight == 0 and tracker.pending == []
        after = c.post(url + "/predict", json=ask).json()
        assert after["waiting"] == 0 and after["e2e_s"] == pytest.approx(calm["e2e_s"], rel=0.05)
