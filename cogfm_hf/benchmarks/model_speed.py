"""CogFM vs transformers' LlamaForCausalLM of the identical shape: training step and greedy decoding.

    python -m cogfm_hf.benchmarks.model_speed                     # cogfm-tiny, CPU fp32 + bf16 (+ CUDA if present)
    python -m cogfm_hf.benchmarks.model_speed --preset cogfm-125m --batch-size 8 --seq-len 512

Both models run in the same process, with measurements interleaved (CogFM, Llama, CogFM, ...) so
that background load hits both alike; each figure is the median over repeats. Reported: tokens/s of
each model and the ratio CogFM / Llama (> 1 means CogFM is faster): the median of the per-round
ratios, with their minimum and maximum as the spread.
"""

import argparse
import contextlib
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ..hardware import describe_cpu
from ..modeling.configuration_cogfm import CogFMConfig
from ..modeling.modeling_cogfm import CogFMForCausalLM


def llama_twin(config: CogFMConfig) -> LlamaConfig:
    """The LlamaConfig with exactly CogFM's shape (QK-norm has no Llama equivalent, so it must be off)."""
    if config.qk_norm:
        raise ValueError("Llama has no QK-norm: benchmark CogFM with qk_norm=False for a like-for-like comparison.")
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device, bf16):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def make_train_step(model, batch, device, bf16):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step():
        with _autocast(device, bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def make_decode(model, prompt, new_tokens, device, bf16):
    def decode():
        with torch.no_grad(), _autocast(device, bf16):
            model.generate(
                prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True
            )

    return decode


def interleaved_times(fns: dict, warmup: int, repeats: int, device) -> dict:
    """Seconds per call of each function, timed round-robin; the order flips every round so neither
    model always runs first (caches and clock boosts favour whichever does)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for round_index in range(repeats):
        order = list(fns) if round_index % 2 == 0 else list(reversed(fns))
        for name in order:
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict, tokens_per_call: int) -> dict:
    """Median tokens/s of each model and the paired per-round ratio CogFM / Llama (median, min, max)."""
    ratios = sorted(llama / cogfm for cogfm, llama in zip(times["cogfm"], times["llama"]))
    return {
        "tokens_per_s": {name: tokens_per_call / statistics.median(t) for name, t in times.items()},
        "ratio_median": statistics.median(ratios),
        "ratio_min": ratios[0],
        "ratio_max": ratios[-1],
    }


def benchmark(
    config: CogFMConfig,
    device: torch.device,
    bf16: bool,
    batch_size: int,
    seq_len: int,
    new_tokens: int,
    warmup: int,
    repeats: int,
) -> dict:
    torch.manual_seed(0)
    models = {
        "cogfm": CogFMForCausalLM(config).to(device),
        "llama": LlamaForCausalLM(llama_twin(config)).to(device),
    }
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    assert counts["cogfm"] == counts["llama"], f"shapes differ: {counts}"
    for model in models.values():
        model.generation_config.pad_token_id = 0

    batch = torch.randint(0, config.vocab_size, (batch_size, seq_len), device=device)
    train = interleaved_times(
        {name: make_train_step(m.train(), batch, device, bf16) for name, m in models.items()}, warmup, repeats, device
    )
    prompt = batch[:1, :32]
    decode = interleaved_times(
        {name: make_decode(m.eval(), prompt, new_tokens, device, bf16) for name, m in models.items()},
        1,
        repeats,
        device,
    )
    return {
        "device": str(device),
        "precision": "bf16-autocast" if bf16 else "fp32",
        "parameters": counts["cogfm"],
        "batch": f"{batch_size}x{seq_len}",
        "decode_shape": f"1x32 prompt + {new_tokens} new",
        "repeats": repeats,
        "train": summarise(train, batch_size * seq_len),
        "decode": summarise(decode, new_tokens),
    }


def format_rows(results: list[dict]) -> str:
    def cells(summary, digits):
        tps = summary["tokens_per_s"]
        return [
            f"{tps['cogfm']:,.{digits}f}",
            f"{tps['llama']:,.{digits}f}",
            f"{summary['ratio_median']:.2f} ({summary['ratio_min']:.2f}-{summary['ratio_max']:.2f})",
        ]

    header = [
        "device",
        "precision",
        "train tok/s CogFM",
        "Llama",
        "ratio (min-max)",
        "decode tok/s CogFM",
        "Llama",
        "ratio (min-max)",
    ]
    rows = [[r["device"], r["precision"]] + cells(r["train"], 0) + cells(r["decode"], 1) for r in results]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cogfm-tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu, and cuda when present")
    parser.add_argument(
        "--precisions",
        nargs="*",
        choices=["fp32", "bf16"],
        default=None,
        help="default: fp32 and bf16 autocast on CPU, bf16 autocast on CUDA",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    config = CogFMConfig.from_preset(args.preset)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results = []
    for device in map(torch.device, devices):
        precisions = args.precisions or (["fp32", "bf16"] if device.type == "cpu" else ["bf16"])
        for bf16 in (p == "bf16" for p in precisions):
            result = benchmark(
                config, device, bf16, args.batch_size, args.seq_len, args.new_tokens, args.warmup, args.repeats
            )
            print(json.dumps(result), flush=True)
            results.append(result)
    print(
        f"\n{args.preset}: {results[0]['parameters']:,} parameters, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads; batch {args.batch_size}x{args.seq_len}; medians of {args.repeats}\n"
        f"CPU: {describe_cpu()}\n"
    )
    print(format_rows(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
