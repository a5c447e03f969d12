"""The scaling ladder (docs/scaling.md): runs at several sizes with branched cooldowns, the fitted law, and a checked
forecast of the largest size.

python training/ladder.py                      # the whole ladder (resumes; skips completed runs)
python training/ladder.py --quick              # the reduced ladder (<= 15 minutes)
python training/ladder.py --stage sweep        # the learning-rate and batch sweep at two sizes only
python training/ladder.py --sizes 3,4          # some sizes now, the rest later
python training/ladder.py --report-only        # rewrite the report from the completed runs
"""

from pathlib import Path

from cogfm_hf.experiments.ladder import main

if __name__ == "__main__":
    main(default_recipe=Path(__file__).parent / "recipes" / "ladder.yaml")
