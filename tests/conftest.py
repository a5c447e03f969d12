import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

# The Hub is unreachable on our machines: make any accidental network access fail fast and loudly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from cogfm_hf import CogFMConfig  # noqa: E402  (after the offline switches)
from cogfm_hf.data import build, load_recipe  # noqa: E402
from cogfm_hf.training.recipe import TrainRecipe  # noqa: E402
from cogfm_hf.training.run import pretrain  # noqa: E402

# The `pretrained` run's evaluation: every task of the group, a few items each, so a test can re-run it with the CLI.
PRETRAINED_EVAL = {"tasks": ["cogfm_all"], "every_steps": 3, "limit": 2, "final_limit": 3, "batch_size": 8}


def small_config(**overrides) -> CogFMConfig:
    """A CogFM small enough for exact-equality tests in milliseconds."""
    fields = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    fields.update(overrides)
    return CogFMConfig(**fields)


@pytest.fixture
def config() -> CogFMConfig:
    return small_config()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_isolated_python(code: str, cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that cannot import cogfm_hf: `-I` drops PYTHONPATH, the
    script's directory and user site-packages, and `cogfm_hf` is blocked explicitly because the
    editable install puts a finder for it into site-packages."""
    guard = (
        "import sys\n"
        "class _BlockCogfm:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cogfm_hf' or name.startswith('cogfm_hf.'):\n"
        "            raise ImportError('cogfm_hf is deliberately unavailable in this process')\n"
        "sys.meta_path.insert(0, _BlockCogfm())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-I", "-c", guard + code],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,  # a prompt for input (trust_remote_code) fails instead of waiting
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_recipe(data_dir: Path, output_dir: Path, **training) -> dict:
    return {
        "data": {
            "output_dir": str(data_dir),
            "workers": 1,
            "sources": [
                {
                    "name": "reasoning",
                    "type": "tasks",
                    "num_examples": 600,
                    "seed": 0,
                    "mixture": [
                        {"task": "chains", "difficulty": [1, 4], "retry_p": 0.3},
                        {"task": "arithmetic", "difficulty": [1, 2], "retry_p": 0.3},
                    ],
                }
            ],
            "tokenizer": {"vocab_size": 320, "train_chars": 60_000},
            "pack": {"seq_len": 64},
        },
        "model": {
            "preset": "cogfm-tiny",
            "overrides": {
                "hidden_size": 48,
                "intermediate_size": 96,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
            },
        },
        "training": {
            "output_dir": str(output_dir),
            "max_steps": 6,
            "per_device_train_batch_size": 4,
            "learning_rate": 3e-3,
            "lr_scheduler_type": "linear",
            "warmup_steps": 0,
            "logging_steps": 1,
            "save_steps": 3,
            "report_to": "none",
            "seed": 0,
            **training,
        },
        "curriculum": {"pacing": "sqrt", "c0": 0.3},
        "loss": {"error_weight": 0.0, "unlikelihood": 0.5, "z_loss": 1e-4},
        "eval": {"enabled": False},
    }


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-data") / "data"
    build(load_recipe(tiny_recipe(directory, directory.parent / "unused")["data"]))
    return directory


@pytest.fixture(scope="session")
def pretrained(data_dir, tmp_path_factory):
    """An in-process pretraining run with in-loop lm-eval evaluation (steps 0, 3, 6), shared by the tests that
    need a checkpoint."""
    output = tmp_path_factory.mktemp("run") / "out"
    recipe = tiny_recipe(data_dir, output)
    recipe["eval"] = PRETRAINED_EVAL
    pretrain(TrainRecipe.from_dict(recipe))
    return output
