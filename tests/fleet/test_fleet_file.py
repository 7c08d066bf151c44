"""The fleet file: one YAML for router, simulator and provisioning, checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from block.fleet.engine_spec import EngineSpec
from block.fleet.fleet_file import FleetFileError, load_fleet, parse_short, split_router_yaml
from block.router.config import RouterConfig

FLEET = """\
policy: llumnix
profile: llama-2-7b-a30
defaults: {max_num_seqs: 32}
instances:
  - http://10.0.0.1:8000
  - url: http://10.0.0.2:8000/
    profile: llama-2-7b-a100
    max-num-seqs: 64
    prefix_caching: true
    kv_events: tcp://10.0.0.2:5557
    labels: {gpu: a100}
groups:
  - {count: 2, profile: llama-2-7b-a100}
  - {count: 3, max_num_seqs: 24}
templates:
  big: {profile: llama-2-7b-a100, max_num_batched_tokens: 2048}
"""


def test_a_fleet_file_is_a_router_config_with_instances_groups_and_templates(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    settings, fleet = split_router_yaml(path)
    assert settings["instances"] == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    a30, a100 = fleet.instances
    assert a30.engine == EngineSpec("llama-2-7b-a30", max_num_seqs=32)
    assert a100.engine == EngineSpec("llama-2-7b-a100", max_num_seqs=64, prefix_caching=True)
    assert (a100.predictor, a100.kv_events, a100.labels) == (None, "tcp://10.0.0.2:5557", {"gpu": "a100"})
    assert [e.profile for e in fleet.engines()] == ["llama-2-7b-a100"] * 2 + ["llama-2-7b-a30"] * 3
    assert fleet.engines()[-1].max_num_seqs == 24
    assert fleet.templates["big"].replica_config().max_num_batched_tokens == 2048
    # --config and --fleet read the same format; the router takes both its settings and the fleet.
    cfg = RouterConfig.build(fleet_path=path)
    assert cfg.policy == "llumnix" and cfg.instances == settings["instances"]
    assert cfg.fleet.engine_for("http://10.0.0.2:8000/") == a100.engine
    assert cfg.kv_events == {"http://10.0.0.2:8000": "tcp://10.0.0.2:5557"}  # the router's KV-events mapping
    assert a100.engine.replica_config().max_num_seqs == 64  # over the A100 profile's 256
    with pytest.raises(ValueError, match="not both"):
        RouterConfig.build(path, fleet_path=path)
    path.write_text(FLEET.replace("    prefix_caching: true\n", "    predictor: http://10.0.0.2:9000\n"))
    with pytest.raises(FleetFileError, match=r"fleet.yaml:5: instances\[0\]: missing field: predictor"):
        split_router_yaml(path)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("instances:\n  - url: http://h:1\n    profile: llama-9\n", "fleet.yaml:3: instances[0].profile: "
         "unknown profile 'llama-9'"),
        ("instances:\n  - http://h:1\n  - url: http://h:1/\n", "fleet.yaml:3: instances[1]: duplicate URL "
         "http://h:1 (also instances[0])"),
        ("groups:\n  - count: 2\n    profile: llama-2-7b-a30\n    max-num-seqs: -4\n", "fleet.yaml:4: "
         "groups[0].max_num_seqs: expected a whole number >= 1, got -4"),
        ("groups:\n  - {count: two, profile: llama-2-7b-a30}\n", "fleet.yaml:2: groups[0].count: expected a "
         "whole number >= 1, got 'two'"),
        ("instances:\n  - url: http://h:1\n    max_num_seq: 4\n", "fleet.yaml:3: instances[0].max_num_seq: "
         "unknown field"),
        ("templates:\n  a: {prefix_caching: maybe}\n", "fleet.yaml:2: templates.a.prefix_caching: expected "
         "true or false"),
    ],
)  # fmt: skip
def test_an_error_names_the_file_the_line_and_the_field(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(FleetFileError) as e:
        split_router_yaml(path)
    assert str(e.value).startswith(f"{tmp_path}/{where}"), str(e.value)


def test_a_bad_fleet_file_stops_the_router_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from block import cli
    from block.router import server

    started: list[object] = []
    monkeypatch.setattr(server, "serve", lambda cfg, _layout: started.append(cfg))
    path = tmp_path / "fleet.yaml"
    path.write_text("instances:\n  - url: http://127.0.0.1:9001\n    profile: nope\n")
    result = CliRunner().invoke(cli.app, ["router", "--fleet", str(path)])
    assert result.exit_code == 2 and not started
    assert f"{path}:3: instances[0].profile: unknown profile 'nope'" in result.output


def test_the_short_form_gives_groups_and_the_simulator_takes_either() -> None:
    fleet = parse_short("2:llama-2-7b-a100, 1:llama-2-7b-a30:max_num_seqs=24")
    assert [e.label() for e in fleet.engines()] == ["llama-2-7b-a100"] * 2 + [
        "llama-2-7b-a30 max_num_seqs=24"
    ]
    assert fleet.describe() == "2 x llama-2-7b-a100 + 1 x llama-2-7b-a30 max_num_seqs=24"
    for bad, says in [
        ("2:nope", "--fleet: groups[0].profile: unknown profile 'nope'"),
        ("x:llama-2-7b-a30", "--fleet: groups[0]: write COUNT:PROFILE"),
        ("2:llama-2-7b-a30:seqs=4", "--fleet: groups[0]: bad setting 'seqs=4'"),
    ]:
        with pytest.raises(FleetFileError, match="^" + says.replace("[", r"\[").replace("]", r"\]")):
            load_fleet(bad)
    with pytest.raises(FleetFileError, match="no such file"):
        load_fleet("missing-fleet.yaml")


def test_provisioning_starts_and_models_the_template_for_new_instances(tmp_path: Path) -> None:
    from block.router.app import make_autoscaler
    from block.router.instance_pool import InstancePool
    from block.router.metrics import RouterMetrics

    path = tmp_path / "fleet.yaml"
    path.write_text(
        "instances: [http://127.0.0.1:9001]\nprovision: reactive\nslo-e2e: 5\nprovider: local-emulator\n"
        "max-instances: 3\ntemplates:\n  default: {profile: llama-2-7b-a30, max_num_seqs: 24}\n"
    )
    cfg = RouterConfig.build(fleet_path=path)
    template = EngineSpec("llama-2-7b-a30", max_num_seqs=24)
    assert cfg.fleet.engine_for("http://127.0.0.1:9001") == EngineSpec()  # listed: nothing said of it
    assert cfg.fleet.engine_for("http://10.0.0.9:8000") == template  # added at run time
    scaler = make_autoscaler(cfg, InstancePool(cfg, RouterMetrics(cfg.policy)))  # built, not started
    assert (scaler.provider.profile, scaler.provider.extra_args) == (
        "llama-2-7b-a30",
        ["--max-num-seqs", "24"],
    )
