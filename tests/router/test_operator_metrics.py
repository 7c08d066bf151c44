"""Forecast quality per instance and the share of decisions made without forecasts, on /metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.router.operator_traffic import router_after_traffic, scrape


def _samples(text: str, name: str) -> list:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


async def test_forecast_error_per_instance_for_ttft_and_e2e_and_forgotten_on_removal() -> None:
    async with router_after_traffic(requests=8) as (app, url, engines):
        text = await scrape(url)
        buckets = _samples(text, "block_router_forecast_error_ratio_bucket")
        seen = {(s.labels["instance"], s.labels["metric"]) for s in buckets}
        instances = {s.labels["instance"] for s in buckets}
        assert instances and instances <= set(app.pool.instances)
        for inst in instances:
            assert (inst, "ttft") in seen and (inst, "e2e") in seen
        counts = {
            s.labels["metric"]: s.value for s in _samples(text, "block_router_forecast_error_ratio_count")
        }
        assert counts  # summed below per metric
        by_metric: dict[str, float] = {}
        for s in _samples(text, "block_router_forecast_error_ratio_count"):
            by_metric[s.labels["metric"]] = by_metric.get(s.labels["metric"], 0) + s.value
        assert by_metric["e2e"] == 8  # every request completed with a forecast
        assert by_metric["ttft"] == 4  # the streamed half: a whole response has no first token time
        latency = _samples(text, "block_router_request_latency_seconds_count")
        assert sum(s.value for s in latency if s.labels["metric"] == "e2e") == 8

        removed = sorted(instances)[0]
        assert await app.pool.remove(removed)
        after = await scrape(url)
        for name in (
            "block_router_forecast_error_ratio_bucket",
            "block_router_request_latency_seconds_count",
        ):
            assert all(s.labels["instance"] != removed for s in _samples(after, name)), name


async def test_share_of_decisions_without_forecasts_is_a_ratio_of_counters() -> None:
    async with router_after_traffic(requests=6) as (_, url, _engines):
        text = await scrape(url)
    decisions = {s.labels["outcome"]: s.value for s in _samples(text, "block_router_decisions_total")}
    # every outcome is exported (0 included), so sum(outcome!="forecast") / sum(all) is defined at once
    assert set(decisions) == {"forecast", "fallback", "no_forecast"}
    assert sum(decisions.values()) == 6
    assert decisions["forecast"] == 6 - decisions["fallback"] and decisions["no_forecast"] == 0
    fallbacks = sum(s.value for s in _samples(text, "block_router_fallbacks_total"))
    assert fallbacks == decisions["fallback"]
