"""deploy/grafana/block-router.json: a Grafana dashboard model whose every query names only metrics that a
real router (block policy, real engine emulators, a few requests) exports on /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.router.operator_traffic import router_after_traffic, scrape

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "block-router.json"

# PromQL words that look like identifiers but are not metric names.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
_KEYWORDS |= {"offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords, label names
    (in braces or grouping clauses), durations or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors, $__rate_interval included
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr):
        name, call = m.group(1), m.group(2)
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def dashboard_queries() -> list[str]:
    model = json.loads(DASHBOARD.read_text())
    assert model["title"] and isinstance(model["panels"], list) and model["panels"]
    exprs = []
    for panel in model["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["type"] == "prometheus"
            exprs.append(target["expr"])
    return exprs


def test_metric_names_are_extracted_from_promql() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (le, instance) "
        '(rate(a_bucket{metric="ttft", x=~"b|c"}[$__rate_interval])))'
        " / on (instance) group_left sum(b_total) or vector(0)"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}


async def test_every_dashboard_query_names_a_metric_the_router_exports() -> None:
    async with router_after_traffic(requests=6) as (_, url, _engines):
        text = await scrape(url)
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    wanted: dict[str, set[str]] = {}
    for expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        for name in names:
            wanted.setdefault(name, set()).add(expr)
    missing = {name: sorted(exprs) for name, exprs in wanted.items() if name not in exported}
    assert not missing, f"the dashboard queries metrics the router does not export: {missing}"
    # the operator's panels are all there: forecast error per instance for both metrics, the share
    # of decisions without forecasts, latency, in flight, health
    for name in (
        "block_router_forecast_error_ratio_bucket",
        "block_router_decisions_total",
        "block_router_request_latency_seconds_bucket",
        "block_router_in_flight",
        "block_router_instance_healthy",
        "block_router_fallbacks_total",
    ):
        assert name in wanted, name
    queries = " ".join(dashboard_queries())
    assert 'metric="ttft"' in queries and 'metric="e2e"' in queries
