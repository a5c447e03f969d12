"""Where the library finds the files it ships beside the package, in one place.

`eval_tasks/` (lm-eval task YAMLs, the fixed test and dev sets, the `evaluate` metric module) lives at the
repository's top level, next to `cogfm_hf/`, because lm-eval reads it by path (`--include_path eval_tasks`) in
processes that need not have this package installed. So these paths exist in a source checkout (an editable install
included), which is how this project is installed; a wheel would have to ship eval_tasks/ as package data. The
library never reads files under `training/`: the entry scripts there pass their recipe paths in.
"""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
EVAL_TASKS_DIR = REPOSITORY / "eval_tasks"
EVAL_DATA_DIR = EVAL_TASKS_DIR / "data"
DIFFICULTY_METRIC_DIR = EVAL_TASKS_DIR / "metrics" / "exact_match_by_difficulty"
