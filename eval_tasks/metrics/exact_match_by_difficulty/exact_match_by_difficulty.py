"""Exact match of final answers, overall and per difficulty: an `evaluate` metric loaded by path.

    import evaluate
    metric = evaluate.load("eval_tasks/metrics/exact_match_by_difficulty")   # a local folder: no Hub access
    metric.compute(predictions=["7", "3"], references=["7", "4"], difficulties=[2, 4])
    # {'exact_match': 0.5, 'by_difficulty': {2: 1.0, 4: 0.0}, 'count_by_difficulty': {2: 1, 4: 1}}

Predictions are already-extracted answers (the tasks' filters extract them); comparison is exact after
stripping surrounding whitespace.
"""

import datasets
import evaluate

_DESCRIPTION = "Exact match of extracted final answers, with a breakdown by problem difficulty."
_INPUTS = """
predictions: list of str, the extracted answers.
references: list of str, the gold answers.
difficulties: optional list of int, the difficulty of each problem; adds the per-difficulty breakdown.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class ExactMatchByDifficulty(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, difficulties=None):
        if difficulties is not None and len(difficulties) != len(predictions):
            raise ValueError(f"difficulties has {len(difficulties)} entries for {len(predictions)} predictions")
        hits = [p is not None and p.strip() == r.strip() for p, r in zip(predictions, references)]
        result = {"exact_match": sum(hits) / len(hits) if hits else 0.0}
        if difficulties is not None:
            totals, correct = {}, {}
            for difficulty, hit in zip(difficulties, hits):
                totals[difficulty] = totals.get(difficulty, 0) + 1
                correct[difficulty] = correct.get(difficulty, 0) + hit
            result["by_difficulty"] = {d: correct[d] / totals[d] for d in sorted(totals)}
            result["count_by_difficulty"] = {d: totals[d] for d in sorted(totals)}
        return result
