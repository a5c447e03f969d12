"""Experiments: runners that train and score many variants of a training recipe, and report what they show.

- `runs`: one run of a recipe variant (its own process), scored item by item with lm-eval; resumable records; the
  tokenizer every run of an experiment shares.
- `selection`: choices made from runs on the dev sets (learning-rate sweeps, best-of-arms), never on test.
- `stats`: means over seeds and paired bootstrap intervals; `plots`: the reports' figures.
- `arms`: an ablation recipe and its arms, each resolved into one run's training recipe.
- `ablation`, `ablation_report`: the runner of ablation recipes (`training/ablate.py`) and its report.
- `scaling_law`: the law L(N, D) a ladder fits, its bootstrap, and the loss -> accuracy step.
- `ladder`, `ladder_report`: the scaling ladder (`training/ladder.py`): sizes with branched cooldowns, the fitted law,
  the forecast of a held-out size (docs/scaling.md).
- `role_probe`: teacher-forced accuracy per kind of solution token of a checkpoint.

This package sits above `cogfm_hf.training` and is imported by nothing below it.
"""
