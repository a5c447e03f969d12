"""The ablation of curriculum and self-correction against a plain baseline (docs/results.md), and the same runner on
other ablation recipes, e.g. the mixers experiment (attention only, Canon layers, the hybrid):
python training/ablate.py training/recipes/mixers-chains.yaml --quick

python training/ablate.py                       # every arm, every seed (resumes; skips completed runs)
python training/ablate.py --core                # baseline, retry p=0.3, curriculum, random-order control
python training/ablate.py --quick               # the reduced version: fewer arms, one seed
python training/ablate.py --arms weak_p0.1 --seeds 0,1
python training/ablate.py --report-only         # rewrite the report from the completed runs
python training/ablate.py RECIPE.yaml --max_steps 8 --output_dir /tmp/abl   # base-recipe overrides
"""

from pathlib import Path

from cogfm_hf.experiments.ablation import main

if __name__ == "__main__":
    main(default_recipe=Path(__file__).parent / "recipes" / "ablation.yaml")
