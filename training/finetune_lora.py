"""LoRA fine-tuning of a CogFM checkpoint with peft, on a recipe's data, with the pretraining trainer.

    accelerate launch training/finetune_lora.py training/recipes/lora-tiny.yaml \\
        --model.checkpoint outputs/cogfm-tiny --lora.merged_output_dir outputs/cogfm-tiny-lora-merged

The adapter (training.output_dir) loads with
`AutoPeftModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`; the merged export is a plain
Hub-ready CogFM checkpoint.
"""

from pathlib import Path

from cogfm_hf.training.run import main

if __name__ == "__main__":
    main("finetune_lora", default_recipe=Path(__file__).parent / "recipes" / "lora-tiny.yaml")
