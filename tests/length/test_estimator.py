import numpy as np
import pytest

from block.length.estimator import LengthEstimator
from block.length.intent import FEATURE_NAMES, intent_features
from block.length.text import char_hashes, char_terms, char_text, parse, term_hash, window, words
from block.length.trees import TreeEnsembles

PROMPTS = [
    "hi",
    "Write a 1000 word essay about the history of Rome.",
    "Translate to French: good morning",
    "write a python function that sorts a list of dicts by a key",
    "Summarize the following text:\n" + "The quick brown fox jumps over the lazy dog. " * 200,
    "",
    "中文问题：什么是机器学习？",
]


def test_predict_positive_ints_and_monotone_quantiles(small_model):
    qs = (0.01, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
    for p in PROMPTS:
        point = small_model.predict(p)
        assert isinstance(point, int) and point >= 1
        quant = small_model.predict_quantiles(p, qs)
        values = [quant[q] for q in qs]
        assert values == sorted(values)
        assert quant[0.5] == point  # the point estimate is the median
        assert all(isinstance(v, int) and v >= 1 for v in values)


def test_batch_equals_single(small_model):
    batch = small_model.predict_many(PROMPTS)
    assert list(batch) == [small_model.predict(p) for p in PROMPTS]


def test_bad_quantile_level(small_model):
    with pytest.raises(ValueError):
        small_model.predict_quantiles("hi", (0.5, 1.0))


def test_save_load_roundtrip(small_model, tmp_path):
    path = small_model.save(tmp_path / "m.npz")
    loaded = LengthEstimator.load(path)
    assert loaded.meta == small_model.meta
    a = small_model.predict_quantiles_many(PROMPTS, (0.1, 0.5, 0.9))
    b = loaded.predict_quantiles_many(PROMPTS, (0.1, 0.5, 0.9))
    # Coefficients are stored as float16: an estimate may move by a token at a rounding edge.
    assert np.abs(a - b).max() <= max(2, 0.01 * a.max())


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError):
        LengthEstimator.load(bad)


def test_fast_tfidf_scorer_matches_sklearn(small_model, sharegpt_split):
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    tf = small_model.scorers["tfidf"]
    vecs = []
    for block in (tf.words, tf.chars):
        v = TfidfVectorizer(analyzer=block.analyzer, sublinear_tf=True, vocabulary=block.terms)
        v.idf_ = block.idf.astype(np.float64)
        vecs.append(v)
    prompts = [s.prompt for s in sharegpt_split[1][:100]] + PROMPTS
    x = hstack([v.transform([window(p) for p in prompts]) for v in vecs]).tocsr()
    got = tf.score_many([parse(p) for p in prompts])
    np.testing.assert_allclose(got, x @ tf.coef + tf.intercept, atol=1e-9)


def test_char_hashes_match_char_terms():
    text = "Hello  World,\tünï 中文 😀!"
    s = char_text(text)
    assert [term_hash(t) for t in char_terms(text)] == char_hashes(s).tolist()


def test_tree_ensembles_match_sklearn():
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.random((600, 5))
    y = 3 * x[:, 0] + np.sin(6 * x[:, 1]) + 0.1 * rng.standard_normal(600)
    with threadpool_limits(limits=1, user_api="openmp"):  # OpenMP spinning is slow on a busy machine
        models = [
            HistGradientBoostingRegressor(loss="quantile", quantile=q, max_iter=25, random_state=0).fit(x, y)
            for q in (0.2, 0.8)
        ]
    x[::9, 2] = np.nan  # missing values follow the learnt default direction
    expected = np.column_stack([m.predict(x) for m in models])
    np.testing.assert_allclose(TreeEnsembles.from_sklearn(models).predict(x), expected, atol=1e-5)


def test_intent_features_read_the_request():
    p = "Write a 500 word essay about climate change. Explain the causes?"
    w = window(p)
    f = dict(zip(FEATURE_NAMES, intent_features(p, w, words(w), 14), strict=True))
    assert f["log_requested_count"] == pytest.approx(np.log1p(500))
    assert f["requested_words"] == 1.0
    assert f["write_head"] == 1.0 and f["longform_head"] == 1.0 and f["explain_head"] == 1.0
    assert f["ends_with_question"] == 1.0 and f["code_head"] == 0.0
    assert len(FEATURE_NAMES) == len(intent_features("", "", [], 0))
