import os
import subprocess
import sys

import pytest
import torch

# The Hub is unreachable on our machines: make any accidental network access fail fast and loudly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from cogfm_hf import CogFMConfig  # noqa: E402  (after the offline switches)


def small_config(**overrides) -> CogFMConfig:
    """A CogFM small enough for exact-equality tests in milliseconds."""
    fields = dict(
        vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
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
        [sys.executable, "-I", "-c", guard + code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
