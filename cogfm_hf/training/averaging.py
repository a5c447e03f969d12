"""The final model as the uniform average of the weights at the last checkpoints of a run (recipe section
`averaging`).

arXiv 2511.18903 finds that a curriculum's gain over random order, large under a constant learning rate, shrinks as
the rate decays (the last, hardest data is trained on at a vanishing rate), and that averaging the final
checkpoints' weights in place of (or beside a moderate) decay keeps it. The average is kept in float32 as a running
mean, taken at the last step and every `every_steps` before it; at the last step it replaces the model's weights
before the in-loop final evaluation and the saved checkpoint see them. A run checkpointed inside the window keeps
the running mean next to its weights (WEIGHT_AVERAGE_FILE), so a resumed run averages exactly what an unbroken one
would.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from .recipe import AveragingConfig

WEIGHT_AVERAGE_FILE = "weight_average.safetensors"
WEIGHT_AVERAGE_COUNT_FILE = "weight_average.json"


class WeightAveraging(TrainerCallback):
    """The running mean of the weights at the averaged steps; at the last step it becomes the model's weights.
    CogFMTrainer adds it before any other callback (the in-loop final evaluation then sees the average) and keeps
    its state in each checkpoint (`save`, `load`)."""

    def __init__(self, config: AveragingConfig, max_steps: int):
        self.steps = {max_steps - i * config.every_steps for i in range(config.checkpoints)}
        self.max_steps = max_steps
        self.average: dict[str, torch.Tensor] = {}
        self.count = 0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step not in self.steps:
            return
        self.count += 1
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                value = parameter.detach().float()
                if name in self.average:
                    self.average[name] += (value - self.average[name]) / self.count
                else:
                    self.average[name] = value.clone()
            if state.global_step == self.max_steps:
                for name, parameter in model.named_parameters():
                    parameter.copy_(self.average[name].to(parameter.dtype))

    def save(self, folder: Path) -> None:
        if self.count:
            save_file({name: value.contiguous() for name, value in self.average.items()}, folder / WEIGHT_AVERAGE_FILE)
            (folder / WEIGHT_AVERAGE_COUNT_FILE).write_text(json.dumps({"count": self.count}))

    def load(self, folder: Path) -> None:
        if (folder / WEIGHT_AVERAGE_FILE).is_file():
            self.average = load_file(folder / WEIGHT_AVERAGE_FILE)
            self.count = int(json.loads((folder / WEIGHT_AVERAGE_COUNT_FILE).read_text())["count"])
