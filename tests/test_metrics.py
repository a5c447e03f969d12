"""The local `evaluate` metric modules load by path, offline, and give the right numbers."""

import evaluate
import pytest

from cogfm_hf.paths import DIFFICULTY_METRIC_DIR

METRIC = DIFFICULTY_METRIC_DIR


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(METRIC))


def test_exact_match_by_difficulty_on_hand_made_cases(metric):
    result = metric.compute(
        predictions=["7", " 3", "yes", "12", "0"], references=["7", "3", "no", "12", "1"], difficulties=[2, 2, 4, 4, 6]
    )
    assert result["exact_match"] == pytest.approx(3 / 5)
    assert result["by_difficulty"] == {2: 1.0, 4: 0.5, 6: 0.0}
    assert result["count_by_difficulty"] == {2: 2, 4: 2, 6: 1}


def test_without_difficulties_and_edge_cases(metric):
    assert metric.compute(predictions=["a"], references=["a"]) == {"exact_match": 1.0}
    assert metric.compute(predictions=["-4"], references=["4"])["exact_match"] == 0.0
    with pytest.raises(ValueError, match="difficulties has 1 entries for 2 predictions"):
        metric.compute(predictions=["1", "2"], references=["1", "2"], difficulties=[1])
