import pytest

from block.length.metrics import coverage, length_metrics


def test_metrics_on_hand_made_numbers():
    actual = [100, 200, 400, 40]
    predicted = [110, 260, 300, 200]
    m = length_metrics(predicted, actual, baseline=150)
    # errors 10, 60, 100, 160
    assert m["mae"] == pytest.approx(82.5)
    # baseline errors 50, 50, 250, 110
    assert m["baseline_mae"] == pytest.approx(115.0)
    assert m["acc50"] == pytest.approx(0.25)
    assert m["acc100"] == pytest.approx(0.75)  # 100 is within 100
    # relative: 10/100 yes, 60/200 no, 100/400 yes (exactly 25%), 160/40 no
    assert m["within25"] == pytest.approx(0.5)
    # ranks: predicted 1,3,4,2 and actual 2,3,4,1 -> sum d^2 = 2 -> 1 - 6*2 / (4*15) = 0.8
    assert m["spearman"] == pytest.approx(0.8)


def test_perfect_ranking_and_constant_prediction():
    assert length_metrics([1, 2, 3], [10, 20, 30], 20)["spearman"] == pytest.approx(1.0)
    assert length_metrics([5, 5, 5], [10, 20, 30], 20)["spearman"] == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError):
        length_metrics([], [], 1)
    with pytest.raises(ValueError):
        length_metrics([1, 2], [1], 1)


def test_coverage():
    assert coverage([0, 10, 0], [5, 20, 1], [3, 25, 1]) == pytest.approx(2 / 3)
