"""The router's settings: provisioning nested in its own ProvisionConfig, reached by the same flat flags and
YAML keys as before (or a nested `provision:` mapping); `block router --help` groups every option."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from block.provision.config import ProvisionConfig
from block.router.cli import register
from block.router.config import RouterConfig

# Every provisioning setting away from its default, as the flat YAML keys of a router file.
FLAT_YAML = """\
instances: [http://127.0.0.1:9001]
policy: llumnix
provision: reactive
slo-e2e: 7.5
min-instances: 2
max-instances: 5
provider: command
standby: http://127.0.0.1:9002/
scale-up-cmd: echo http://127.0.0.1:9003
scale-down-cmd: "true"
hook-timeout-s: 12
emulator-profile: tiny-slow
cooldown-s: 3
scale-down: false
scale-down-hold-s: 40
scale-down-fraction: 0.25
scale-up-fraction: 0.75
provision-interval-s: 0.2
provision-start-timeout-s: 90
"""

EXPECTED = ProvisionConfig(
    mode="reactive",
    slo_e2e=7.5,
    min_instances=2,
    max_instances=5,
    provider="command",
    standby=["http://127.0.0.1:9002"],
    scale_up_cmd="echo http://127.0.0.1:9003",
    scale_down_cmd="true",
    hook_timeout_s=12,
    emulator_profile="tiny-slow",
    cooldown_s=3,
    scale_down=False,
    scale_down_hold_s=40,
    scale_down_fraction=0.25,
    scale_up_fraction=0.75,
    interval_s=0.2,
    start_timeout_s=90,
)

# The same through the flags (those that exist: hook timeout, fractions and interval are YAML-only).
FLAGS = [
    "--instance=http://127.0.0.1:9001",
    "--policy=llumnix",
    "--provision=reactive",
    "--slo-e2e=7.5",
    "--min-instances=2",
    "--max-instances=5",
    "--provider=command",
    "--standby=http://127.0.0.1:9002/",
    "--scale-up-cmd=echo http://127.0.0.1:9003",
    "--scale-down-cmd=true",
    "--emulator-profile=tiny-slow",
    "--cooldown-s=3",
    "--no-scale-down",
    "--scale-down-hold-s=40",
    "--scale-up-fraction=0.75",
    "--start-timeout-s=90",
]
YAML_ONLY = "hook-timeout-s: 12\nscale-down-fraction: 0.25\nprovision-interval-s: 0.2\n"


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _serve_with(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, RouterConfig | None]:
    """Run `block router ARGS` up to the point it would serve; return the result and the config it built."""
    import block.router.server

    built: list[RouterConfig] = []
    monkeypatch.setattr(block.router.server, "serve", lambda cfg, _layout: built.append(cfg))  # no port bound
    result = CliRunner().invoke(_app(), ["router", *args])
    return result, (built[0] if built else None)


def test_flat_yaml_keys_fill_the_nested_provision_config(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(FLAT_YAML)
    cfg = RouterConfig.build(path)
    assert cfg.provision == EXPECTED
    assert cfg.policy == "llumnix" and cfg.instances == ["http://127.0.0.1:9001"]
    settings = cfg.provision.settings(len(cfg.instances))
    assert settings is not None and (settings.mode, settings.max_instances) == ("reactive", 5)


def test_a_nested_provision_mapping_gives_the_same_config(tmp_path: Path) -> None:
    lines = FLAT_YAML.splitlines()
    router_lines, provision_lines = lines[:2], lines[2:]
    nested = [provision_lines[0].replace("provision: ", "  mode: ")] + [
        "  " + line for line in provision_lines[1:]
    ]
    path = tmp_path / "router.yaml"
    path.write_text("\n".join([*router_lines, "provision:", *nested]) + "\n")
    assert RouterConfig.build(path).provision == EXPECTED
    # The router's flat names work inside the mapping too, and flags still win over the file.
    path.write_text(
        "instance: http://h:1\nprovision:\n  provision: reactive\n  slo_e2e: 2\n  provision-interval-s: 0.3\n"
    )
    cfg = RouterConfig.build(path, slo_e2e=4.0)
    assert (cfg.provision.mode, cfg.provision.slo_e2e, cfg.provision.interval_s) == ("reactive", 4.0, 0.3)


def test_flags_give_the_same_config_as_the_yaml_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "yaml-only.yaml"
    path.write_text(YAML_ONLY)
    result, cfg = _serve_with([*FLAGS, f"--config={path}"], monkeypatch)
    assert result.exit_code == 0, result.output
    assert cfg is not None and cfg.provision == EXPECTED
    assert cfg.policy == "llumnix" and cfg.instances == ["http://127.0.0.1:9001"]


def test_provisioning_is_off_by_default_and_flags_alone_do_not_turn_it_on() -> None:
    cfg = RouterConfig.build(
        instances=["http://127.0.0.1:9001"], slo_e2e=5.0, standby=["http://127.0.0.1:9002"]
    )
    assert not cfg.provision.enabled and cfg.provision.settings(1) is None
    assert cfg.provision.standby == ["http://127.0.0.1:9002"]  # still checked against --allowed-upstreams


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--provision=preemptive"], "--provision needs --slo-e2e SECONDS"),
        (["--provision=sometimes", "--slo-e2e=1"], "provision mode must be one of preemptive, reactive"),
        (["--provision=reactive", "--slo-e2e=1", "--provider=cloud"], "unknown provider 'cloud'"),
        (
            ["--provision=reactive", "--slo-e2e=1", "--provider=command", "--max-instances=2"],
            "needs --scale-up-cmd",
        ),
        (["--provision=reactive", "--slo-e2e=1", "--provider=local-emulator"], "needs --max-instances"),
    ],
)
def test_bad_provisioning_flags_are_one_line_errors(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, cfg = _serve_with(["--instance=http://127.0.0.1:9001", *args], monkeypatch)
    assert result.exit_code == 2 and cfg is None
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_unknown_keys_in_a_nested_provision_mapping_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text("instances: [http://127.0.0.1:9001]\nprovision:\n  mode: reactive\n  slo: 5\n")
    with pytest.raises(ValueError, match=r"^unknown provisioning setting\(s\): slo$"):
        RouterConfig.build(path)


PANELS = ("Server", "Routing", "State", "Provisioning", "Security", "Timeouts and limits")


def test_router_help_groups_every_option_in_a_panel() -> None:
    result = CliRunner().invoke(_app(), ["router", "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0
    panels: dict[str, list[str]] = {}
    current = None
    for line in result.output.splitlines():
        title = re.match(r"\s*╭─ (.+?) ─", line)
        if title:
            current = panels.setdefault(title.group(1), [])
            continue
        flag = re.match(r"\s*│ (--[a-z0-9-]+)", line)
        if flag and current is not None:
            current.append(flag.group(1))
    assert set(PANELS) <= set(panels), panels.keys()
    assert panels["Options"] == ["--help"]  # nothing left ungrouped
    assert "--slo-e2e" in panels["Provisioning"] and "--standby" in panels["Provisioning"]
    assert "--policy" in panels["Routing"] and "--refresh-ms" in panels["State"]
    assert "--api-key" in panels["Security"] and "--drain-timeout-s" in panels["Timeouts and limits"]
