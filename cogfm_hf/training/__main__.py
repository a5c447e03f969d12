"""python -m cogfm_hf.training {pretrain,finetune_lora} RECIPE.yaml [--field value ...]

The module form of training/pretrain.py and training/finetune_lora.py (which add their default recipes):
what `accelerate launch -m cogfm_hf.training ...` and the experiments runner start.
"""

import sys

from .run import FLOWS, main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in FLOWS:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
