"""`make demo` runs its engines off their profile, and the routers are not told."""

from __future__ import annotations

from pathlib import Path

from block.demo import DemoSettings, cluster_servers, model_error_note
from block.profiles.model_error import ModelError


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_engines_get_the_model_error_and_the_routers_do_not(tmp_path: Path) -> None:
    settings = DemoSettings(instances=3, seed=2)
    assert settings.model_error == "static:0.2"
    engines, router_argv = cluster_servers(settings, "block", tmp_path)
    argvs = [list(e._argv_for_port(1234)) for e in engines]
    assert [_flag(a, "--model-error") for a in argvs] == ["static:0.2"] * 3
    assert [_flag(a, "--seed") for a in argvs] == ["2000", "2001", "2002"]  # one instance index each
    assert not any("model-error" in a or "static" in a for a in router_argv)
    off = cluster_servers(DemoSettings(model_error=""), "block", tmp_path)[0][0]
    assert _flag(list(off._argv_for_port(1234)), "--model-error") == "none"


def test_the_header_says_how_far_off_each_engine_runs() -> None:
    note = model_error_note(DemoSettings(instances=4, seed=0))
    speeds = [ModelError("static", 0.2).speed(i)(0.0) for i in range(4)]
    assert "up to 20%" in note and "not told" in note
    assert all(f"x{v:.2f}" in note for v in speeds)
    assert min(speeds) < 0.9 and max(speeds) > 1.1  # slow and fast engines in every cluster
    assert "no model error" in model_error_note(DemoSettings(model_error="none"))
    assert "drift:0.2" in model_error_note(DemoSettings(model_error="drift:0.2"))
