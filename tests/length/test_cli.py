import json

from typer.testing import CliRunner

from block.cli import app
from tests.length.fake_engine import FakeEngine

runner = CliRunner()


def test_predict_prints_point_and_quantiles():
    r = runner.invoke(app, ["length", "predict", "Write a poem about the sea"])
    assert r.exit_code == 0, r.output
    assert "tokens (q0.1=" in r.output and "q0.9=" in r.output
    r = runner.invoke(app, ["length", "predict", "hi", "--json", "-q", "0.9,0.5"])
    obj = json.loads(r.output)
    assert obj["tokens"] == obj["quantiles"]["0.5"] <= obj["quantiles"]["0.9"]


def test_predict_bad_quantiles_is_one_line_error():
    r = runner.invoke(app, ["length", "predict", "hi", "-q", "0.5,2"])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output


def test_missing_model_file(tmp_path):
    r = runner.invoke(app, ["length", "predict", "hi", "--length-model", str(tmp_path / "nope.npz")])
    assert r.exit_code == 2 and "no such model file" in r.output


def test_train_then_eval_json_on_jsonl(small_jsonl, tmp_path):
    model = tmp_path / "m.npz"
    r = runner.invoke(
        app, ["length", "train", "--dataset", f"jsonl:{small_jsonl}", "--out", str(model), "--no-eval"]
    )
    assert r.exit_code == 0, r.output
    assert model.is_file()
    r = runner.invoke(
        app, ["length", "eval", "--dataset", f"jsonl:{small_jsonl}", "--length-model", str(model), "--json"]
    )
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output)
    assert {"mae", "baseline_mae", "spearman", "acc50", "acc100", "within25"} <= set(obj)
    assert obj["mae"] > 0 and 0 <= obj["acc50"] <= obj["acc100"] <= 1
    # Quantile honesty: the 10-90% band, and per fitted level the share of outputs at or below it.
    assert 0 <= obj["coverage80"] <= 1
    shares = list(obj["coverage"].values())
    assert list(obj["coverage"]) == ["0.05", "0.1", "0.25", "0.5", "0.75", "0.9", "0.95"]
    assert shares == sorted(shares)


def test_train_rejects_length_only_dataset(tmp_path):
    r = runner.invoke(app, ["length", "train", "--dataset", "fixed:10:10", "--out", str(tmp_path / "m.npz")])
    assert r.exit_code == 2 and "no prompt text" in r.output


def test_bench_prints_costs(small_jsonl):
    r = runner.invoke(app, ["length", "bench", "--dataset", f"jsonl:{small_jsonl}", "-n", "30", "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output)
    assert obj["n"] == 30 and 0 < obj["p50_ms"] <= obj["p99_ms"]
    assert obj["batch_size"] == 16 and 0 < obj["batch16_p50_ms"] <= obj["batch16_p99_ms"]  # one batch of 16


def test_label_command(small_jsonl, tmp_path):
    out = tmp_path / "labels.jsonl"
    with FakeEngine() as engine:
        r = runner.invoke(
            app,
            [
                "length",
                "label",
                "--url",
                engine.url,
                "--dataset",
                f"jsonl:{small_jsonl}",
                "--num-requests",
                "10",
                "--out",
                str(out),
            ],
        )
    assert r.exit_code == 0, r.output
    assert "labelled 10 prompts" in r.output
    assert len(out.read_text().splitlines()) == 10


def test_label_unreachable_is_one_line_error(small_jsonl, tmp_path):
    with FakeEngine() as engine:
        url = engine.url
    r = runner.invoke(
        app,
        [
            "length",
            "label",
            "--url",
            url,
            "--dataset",
            f"jsonl:{small_jsonl}",
            "-n",
            "2",
            "--out",
            str(tmp_path / "x.jsonl"),
        ],
    )
    assert r.exit_code == 2 and "cannot reach" in r.output
