"""Sizes of the CogFM presets: parameters, training FLOPs per token, and memory per GPU under FSDP.

    python -m cogfm_hf.presets            # every preset
    python -m cogfm_hf.presets cogfm-1b   # one preset

Parameters are counted on a model built on the meta device (no memory is used). The FLOP and
memory figures are analytic estimates whose assumptions `ASSUMPTIONS` states and the table prints.
"""

import argparse
from dataclasses import dataclass

import torch

from .console import text_table
from .modeling.configuration_cogfm import PRESETS, CogFMConfig
from .modeling.modeling_cogfm import CogFMForCausalLM

# What each preset name promises, as (target parameters, relative tolerance).
PRESET_TARGETS = {
    "cogfm-tiny": (5.0e6, 0.5),
    "cogfm-125m": (125e6, 0.10),
    "cogfm-1b": (1.0e9, 0.10),
    "cogfm-6b": (6.0e9, 0.05),
}

GPU_COUNTS = (1, 8, 64)
GIB = 1024**3

ASSUMPTIONS = """\
Assumptions:
- FLOPs/token = 6 x (matmul parameters, output head included even when tied)
  + 12 x layers x seq_len x (heads x head_dim) for attention scores and values (PaLM appendix B);
  seq_len = the preset's max_position_embeddings; the causal half is not discounted.
- Memory per GPU: FSDP full sharding (ZeRO-3) with bf16 compute and fp32 master weights:
  sharded fp32 weights + fp32 grads + AdamW m and v = 16 bytes/parameter / GPUs;
  plus unsharded bf16 copies of the 3 largest FSDP units in flight (current, prefetched, grad being reduced);
  plus activations of one sequence of seq_len tokens per GPU with every decoder layer checkpointed
  (bf16 layer inputs kept, one layer's internals recomputed; SDPA/flash attention, no seq^2 buffers);
  plus fp32 logits and their gradient. CUDA context, allocator fragmentation and comms buffers
  (typically 1-3 GiB) are not included."""


@dataclass
class PresetSize:
    name: str
    parameters: int
    train_flops_per_token: float
    memory_gib_per_gpu: dict[int, float]


def count_parameters(config: CogFMConfig) -> int:
    """Unique parameters of CogFMForCausalLM (tied embeddings counted once), built on the meta device."""
    with torch.device("meta"):
        model = CogFMForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


def layer_parameters(config: CogFMConfig) -> int:
    kv_width = config.num_key_value_heads * config.head_dim
    q_width = config.num_attention_heads * config.head_dim
    attention = config.hidden_size * (2 * q_width + 2 * kv_width)
    mlp = 3 * config.hidden_size * config.intermediate_size
    return attention + mlp


def train_flops_per_token(config: CogFMConfig, seq_len: int) -> float:
    matmul_params = config.num_hidden_layers * layer_parameters(config) + config.vocab_size * config.hidden_size
    attention = 12 * config.num_hidden_layers * seq_len * config.num_attention_heads * config.head_dim
    return 6 * matmul_params + attention


def train_memory_bytes_per_gpu(config: CogFMConfig, parameters: int, gpus: int, seq_len: int) -> float:
    sharded_states = 16 * parameters / gpus
    embedding = config.vocab_size * config.hidden_size
    largest_unit = max(layer_parameters(config), embedding)
    gathered = 3 * 2 * largest_unit
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * config.head_dim
    checkpointed_inputs = config.num_hidden_layers * seq_len * h * 2
    one_layer_internals = seq_len * (6 * h + 2 * kv + 4 * i) * 2
    logits = seq_len * config.vocab_size * 4 * 2
    return sharded_states + gathered + checkpointed_inputs + one_layer_internals + logits


def preset_size(name: str) -> PresetSize:
    config = CogFMConfig.from_preset(name)
    parameters = count_parameters(config)
    seq_len = config.max_position_embeddings
    return PresetSize(
        name=name,
        parameters=parameters,
        train_flops_per_token=train_flops_per_token(config, seq_len),
        memory_gib_per_gpu={
            gpus: train_memory_bytes_per_gpu(config, parameters, gpus, seq_len) / GIB for gpus in GPU_COUNTS
        },
    )


def format_table(sizes: list[PresetSize]) -> str:
    header = ["preset", "params", "seq", "train GFLOP/token"] + [f"GiB/GPU @{g}" for g in GPU_COUNTS]
    rows = [
        [size.name, f"{size.parameters / 1e6:,.1f} M", str(CogFMConfig.from_preset(size.name).max_position_embeddings)]
        + [f"{size.train_flops_per_token / 1e9:,.3f}"]
        + [f"{size.memory_gib_per_gpu[g]:,.1f}" for g in GPU_COUNTS]
        for size in sizes
    ]
    return text_table([header, *rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("presets", nargs="*", metavar="PRESET", help=f"any of {sorted(PRESETS)}; default: all")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.presets) - set(PRESETS))
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {sorted(PRESETS)}")
    names = args.presets or list(PRESETS)
    print(format_table([preset_size(name) for name in names]))
    print()
    print(ASSUMPTIONS)


if __name__ == "__main__":
    main()
