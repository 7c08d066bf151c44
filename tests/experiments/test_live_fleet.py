"""The live runner starts each engine of a mixed fleet with its own profile and settings."""

from __future__ import annotations

from pathlib import Path

from block.experiments.hetero import HeteroArgs, live_args
from block.experiments.live_runner import EngineKey, closed_loop_concurrency, engine_servers


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_each_engine_gets_its_kind_and_the_cluster_wide_settings(tmp_path: Path) -> None:
    args = live_args(HeteroArgs(fleets=["mixed-seqs"]))
    spec = args.spec("mixed-seqs", "block", 8.0)
    assert (spec.instances, args.policies) == (4, ["block", "llumnix", "round-robin"])
    servers = engine_servers(EngineKey.of(spec), "t", tmp_path, "warning")
    argvs = [list(s._argv_for_port(1234)) for s in servers]
    assert [_flag(a, "--profile") for a in argvs] == ["llama-2-7b-a30"] * 4
    assert [_flag(a, "--max-num-seqs") for a in argvs] == ["48", "48", "24", "24"]
    assert all(_flag(a, "--max-num-batched-tokens") == "512" for a in argvs)
    assert len({_flag(a, "--seed") for a in argvs}) == 4  # one noise stream per engine
    assert closed_loop_concurrency(spec) == 48 + 48 + 24 + 24
    mixed = args.spec("mixed-a100-a30", "block", 8.0)
    profiles = [
        _flag(list(s._argv_for_port(1)), "--profile")
        for s in engine_servers(EngineKey.of(mixed), "u", tmp_path, "warning")
    ]
    assert profiles == ["llama-2-7b-a100"] * 2 + ["llama-2-7b-a30"] * 2


def test_the_demo_starts_a_mixed_fleet_per_cluster(tmp_path: Path) -> None:
    from block.demo import DemoSettings, cluster_servers
    from block.fleet.fleet_file import parse_short

    fleet = tuple(parse_short("1:llama-2-7b-a100,1:llama-2-7b-a30:max_num_seqs=24").engines())
    engines, _ = cluster_servers(DemoSettings(instances=2, fleet=fleet), "block", tmp_path)
    argvs = [list(e._argv_for_port(1)) for e in engines]
    assert [_flag(a, "--profile") for a in argvs] == ["llama-2-7b-a100", "llama-2-7b-a30"]
    assert "--max-num-seqs" not in argvs[0] and _flag(argvs[1], "--max-num-seqs") == "24"
