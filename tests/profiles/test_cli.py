"""`block profile list / show / fit-vidur` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from block.cli import app

runner = CliRunner()


def test_list() -> None:
    result = runner.invoke(app, ["profile", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "llama-2-7b-a30" in result.output and "tiny-fast" in result.output
    data = json.loads(runner.invoke(app, ["profile", "list", "--json"]).output)
    assert {d["name"] for d in data} >= {"llama-2-7b-a100", "llama-2-7b-a30"}


def test_show_prints_decode_and_prefill() -> None:
    result = runner.invoke(app, ["profile", "show", "llama-2-7b-a30"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("Decode step", "1024 context tokens", "Prefill", "2,048", "assumptions", "mlp.csv"):
        assert text in result.output


def test_show_json() -> None:
    result = runner.invoke(app, ["profile", "show", "llama-2-7b-a100", "--json", "--context", "512"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["decode_step_ms"]) == {"1", "8", "32", "48"}
    assert set(data["prefill_ms"]) == {"512", "2048"}
    assert data["context_tokens_per_seq"] == 512
    assert data["prefill_chunk_tokens"] == 2048
    assert data["decode_step_ms"]["1"] < data["decode_step_ms"]["48"]


def test_show_accepts_a_json_path(tmp_path: Path) -> None:
    from block.profiles import load_profile

    path = tmp_path / "mine.json"
    load_profile("tiny-fast").save(path)
    result = runner.invoke(app, ["profile", "show", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["name"] == "tiny-fast"


def test_unknown_profile_is_a_one_line_error() -> None:
    result = runner.invoke(app, ["profile", "show", "no-such-profile"], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "error:" in result.output and "unknown profile" in result.output
    assert "Traceback" not in result.output


def test_fit_vidur_without_csvs_is_a_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["profile", "fit-vidur", "--data-dir", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 2
    assert "error:" in result.output and "not found" in result.output
    assert not out.exists()
