"""Sizes of the CogFM presets: parameters, training FLOPs per token, and memory per GPU under FSDP.

    python -m cogfm_hf.presets            # every preset
    python -m cogfm_hf.presets cogfm-1b   # one preset

Parameters are counted on a model built on the meta device (no memory is used). The FLOP and
memory figures are analytic estimates whose assumptions `ASSUMPTIONS` states and the table prints.
"""

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from .console import text_table
from .modeling.configuration_cogfm import ATTENTION_LAYER_TYPES, PRESETS, SSM_LAYER_TYPES, CogFMConfig
from .modeling.mixers_cogfm import CogFMCausalConv
from .modeling.modeling_cogfm import CogFMForCausalLM

# What each preset name promises, as (target parameters, relative tolerance).
PRESET_TARGETS = {
    "cogfm-tiny": (5.0e6, 0.5),
    "cogfm-125m": (125e6, 0.10),
    "cogfm-1b": (1.0e9, 0.10),
    "cogfm-6b": (6.0e9, 0.05),
    # Other mixers at the size of the attention-only preset they are compared with.
    "cogfm-tiny-canon": (5.77e6, 0.05),
    "cogfm-tiny-hybrid": (5.77e6, 0.05),
    "cogfm-6b-hybrid": (6.0e9, 0.05),
}

GPU_COUNTS = (1, 8, 64)
GIB = 1024**3

ASSUMPTIONS = """\
Assumptions:
- FLOPs/token = 6 x (matmul and convolution weights, output head included even when tied)
  + 12 x attention layers x seq_len x (heads x head_dim) for attention scores and values (PaLM appendix B)
  + 6 x SSM layers x SSM heads x (chunk x (state + head_dim) + 2 x state x head_dim) for Mamba-2's chunked scan
  (its within-chunk scores and values, and the chunk states in and out); seq_len = the preset's
  max_position_embeddings; the causal half is not discounted (in attention or in a chunk).
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


def layer_parameters(config: CogFMConfig) -> list[int]:
    """Parameters of each decoder layer, counted on the meta device."""
    with torch.device("meta"):
        model = CogFMForCausalLM(config)
    return [sum(p.numel() for p in layer.parameters()) for layer in model.model.layers]


def train_flops_per_token(config: CogFMConfig, seq_len: int) -> float:
    with torch.device("meta"):
        model = CogFMForCausalLM(config)
    # Norm gains and the SSM's per-head scalars are elementwise work, not multiply-accumulates over an input.
    weights = sum(
        module.weight.numel()
        for module in model.model.layers.modules()
        if isinstance(module, (nn.Linear, CogFMCausalConv))
    )
    matmul_params = weights + config.vocab_size * config.hidden_size
    attention_layers = sum(layer_type in ATTENTION_LAYER_TYPES for layer_type in config.layer_types)
    attention = 12 * attention_layers * seq_len * config.num_attention_heads * config.head_dim
    ssm = 0
    if ssm_layers := sum(layer_type in SSM_LAYER_TYPES for layer_type in config.layer_types):
        heads = config.mamba_d_ssm // config.mamba_d_head
        chunk = min(config.mamba_chunk_size, seq_len)
        per_head = (
            chunk * (config.mamba_d_state + config.mamba_d_head) + 2 * config.mamba_d_state * config.mamba_d_head
        )
        ssm = 6 * ssm_layers * heads * per_head
    return 6 * matmul_params + attention + ssm


def train_memory_bytes_per_gpu(config: CogFMConfig, parameters: int, gpus: int, seq_len: int) -> float:
    sharded_states = 16 * parameters / gpus
    embedding = config.vocab_size * config.hidden_size
    largest_unit = max(*layer_parameters(config), embedding)
    gathered = 3 * 2 * largest_unit
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * config.head_dim
    checkpointed_inputs = config.num_hidden_layers * seq_len * h * 2
    one_layer_internals = seq_len * (6 * h + 2 * kv + 4 * i) * 2
    if set(config.layer_types) & set(SSM_LAYER_TYPES):  # in_proj's output, the convolved x|B|C and the scan's y
        one_layer_internals += (
            seq_len * (3 * config.mamba_d_ssm + 4 * config.mamba_n_groups * config.mamba_d_state) * 2
        )
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
