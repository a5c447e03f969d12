import json
import re
import subprocess
import sys

import pytest

from cogfm_hf import PRESETS, CogFMConfig, CogFMForCausalLM
from cogfm_hf.presets import PRESET_TARGETS, count_parameters, preset_size

from .conftest import small_config


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(hidden_size=0), "hidden_size"),
        (dict(vocab_size=-5), "vocab_size"),
        (dict(intermediate_size=0), "intermediate_size"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(num_attention_heads=0), "num_attention_heads"),
        (dict(max_position_embeddings=0), "max_position_embeddings"),
        (dict(hidden_size=66, num_attention_heads=4), "num_attention_heads"),  # 4 does not divide 66
        (dict(num_attention_heads=4, num_key_value_heads=3), "num_key_value_heads"),
        (dict(num_key_value_heads=-1), "num_key_value_heads"),
        (dict(head_dim=15), "head_dim"),  # RoPE needs even head_dim
        (dict(layer_types=["full_attention", "mamba2"]), "layer_types[1]"),
        (dict(layer_types=["full_attention"]), "layer_types"),  # wrong length
        (dict(rope_theta=0.0), "rope_theta"),
        (dict(rms_norm_eps=-1e-6), "rms_norm_eps"),
        (dict(initializer_range=0.0), "initializer_range"),
        (dict(attention_dropout=1.0), "attention_dropout"),
    ],
)
def test_invalid_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=re.escape(f"CogFMConfig.{field}")):
        small_config(**overrides)


def test_explicit_head_dim_allows_heads_not_dividing_hidden():
    config = small_config(hidden_size=66, num_attention_heads=4, head_dim=16)
    assert config.head_dim == 16


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="cogfm-tiny"):
        CogFMConfig.from_preset("cogfm-7b")


def test_config_round_trips_through_json(tmp_path):
    config = CogFMConfig.from_preset("cogfm-tiny", qk_norm=True)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "cogfm" and saved["qk_norm"] is True
    assert saved["auto_map"]["AutoConfig"] == "configuration_cogfm.CogFMConfig"
    reloaded = CogFMConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_count_within_tolerance(name):
    target, tolerance = PRESET_TARGETS[name]
    parameters = count_parameters(CogFMConfig.from_preset(name))
    assert abs(parameters - target) <= tolerance * target, f"{name}: {parameters:,} vs {target:,.0f} ± {tolerance:.0%}"


def test_meta_count_matches_a_real_model():
    config = CogFMConfig.from_preset("cogfm-tiny")
    real = CogFMForCausalLM(config)
    assert count_parameters(config) == sum(p.numel() for p in real.parameters())


def test_sizing_cli_prints_every_preset():
    out = subprocess.run([sys.executable, "-m", "cogfm_hf.presets"], capture_output=True, text=True, check=True).stdout
    for name in PRESETS:
        assert name in out
    assert "Assumptions" in out and "GiB/GPU @64" in out


def test_fsdp_memory_shrinks_with_more_gpus():
    size = preset_size("cogfm-6b")
    assert size.memory_gib_per_gpu[1] > size.memory_gib_per_gpu[8] > size.memory_gib_per_gpu[64]
    # 16 bytes/param of sharded state alone is ~90 GiB on one GPU for 6 B parameters
    assert size.memory_gib_per_gpu[1] > 16 * 5.7e9 / 1024**3
    assert size.train_flops_per_token > 6 * size.parameters * 0.9
