from block.length import LengthEstimator, load_default_estimator
from block.length.default import shipped_model_path


def test_shipped_model_is_small_and_loads():
    path = shipped_model_path()
    assert path.is_file(), "block/length/data/default_tfidf.npz must ship with the package"
    assert path.stat().st_size < 3 * 1024 * 1024
    est = LengthEstimator.load(path)
    assert est.model == "tfidf" and est.meta["dataset"] == "sharegpt"


def test_default_estimator_predicts_positive_ints():
    est = load_default_estimator()
    assert est is load_default_estimator()  # cached
    for prompt in ("hi", "Write a detailed essay on the French revolution.", "", "x" * 20000):
        n = est.predict(prompt)
        assert isinstance(n, int) and n >= 1
        q = est.predict_quantiles(prompt, (0.5, 0.9))
        assert q[0.5] == n <= q[0.9]
    # The shipped model has learnt something: an essay is longer than a greeting.
    assert est.predict("Write a detailed 1500 word essay on the French revolution.") > est.predict("hi")


def test_missing_shipped_model_trains_once_and_caches(monkeypatch, tmp_path, small_model):
    import block.length.default as default
    import block.length.train_cli as train_cli

    calls = []

    def fake_train(*args, **kwargs):
        calls.append(args)
        return small_model

    monkeypatch.setattr(default, "shipped_model_path", lambda: tmp_path / "missing.npz")
    monkeypatch.setattr(default, "cached_model_path", lambda: tmp_path / "cache" / "default.npz")
    monkeypatch.setattr(train_cli, "train_with_progress", fake_train)
    monkeypatch.setattr(default, "_cached", None)
    assert default.load_default_estimator() is small_model
    assert len(calls) == 1 and (tmp_path / "cache" / "default.npz").is_file()
    # A new process finds the cached copy instead of training again.
    monkeypatch.setattr(default, "_cached", None)
    assert default.load_default_estimator().predict("hi") >= 1
    assert len(calls) == 1
