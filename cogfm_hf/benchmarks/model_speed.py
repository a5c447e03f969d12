"""CogFM's training step against transformers' LlamaForCausalLM of the identical shape; and greedy decoding.

    python -m cogfm_hf.benchmarks.model_speed                        # cogfm-tiny, the precision a run would use
    python -m cogfm_hf.benchmarks.model_speed --overrides hidden_size=512 intermediate_size=1280 \
        num_hidden_layers=8 num_attention_heads=8 num_key_value_heads=4                 # ~24 M parameters
    python -m cogfm_hf.benchmarks.model_speed --preset cogfm-125m --batch-size 8 --seq-len 512
    python -m cogfm_hf.benchmarks.model_speed --mixers cogfm-tiny-canon cogfm-tiny-hybrid   # other mixers

Training-step arms (one optimizer step on one batch: forward, loss, backward, fused AdamW as the Trainer's default):
  llama           eager LlamaForCausalLM, SDPA attention, its own loss: what a user gets (the baseline)
  llama_compiled  the same model under torch.compile: what compiling alone buys
  cogfm           CogFM through CogFMTrainer's forward_and_loss, not compiled
  cogfm_compiled  what CogFMTrainer runs with `compile: true`: forward and loss compiled as one graph
  cogfm_compiled_eager  (on request) the same with attention in plain matmuls, which inductor fuses

The CogFM arms train on packed rows as CogFMTrainer does (documents of PACKED_DOCUMENT_TOKENS, restarting
position_ids, so attention is masked per document): more work than Llama's plain causal rows, not less.

All arms run in one process, timed round-robin with the order flipped every round, so background load hits them
alike. Reported: tokens/s of each arm (median over rounds) and its ratio to `llama`: the median of the per-round
ratios, with their minimum and maximum as the spread. The first call of each arm is timed apart (compile time:
the first call minus a steady step; inductor's cache, under TORCHINDUCTOR_CACHE_DIR or /tmp, makes a second run
pay less). `--memory` adds each arm's peak memory: on CUDA the peak allocation of its step above what all arms hold
resident (their weights and optimizer states), on a CPU the peak resident set of a fresh process that runs only
that arm.

`--mixers PRESET...` compares CogFM of other mixers (Canon layers, the hybrid) with the attention-only `--preset`
instead of Llama: the same training step (eager, or compiled with `--compiled`) on the same packed rows, and cached
greedy decoding of `--new-tokens` (default 32) after prompts of each `--decode-contexts` length (a long prompt is
where an SSM's constant-size state should pay), each ratio against the attention-only model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from ..hardware import describe_cpu, resolve_bf16
from ..modeling.configuration_cogfm import PRESETS, CogFMConfig
from ..modeling.modeling_cogfm import CogFMForCausalLM
from ..training.loss import LossConfig, token_weights
from ..training.trainer import forward_and_loss

TRAIN_ARMS = ("llama", "llama_compiled", "cogfm", "cogfm_compiled", "cogfm_compiled_eager")
PACKED_DOCUMENT_TOKENS = 128
DEFAULT_ARMS = TRAIN_ARMS[:4]


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


def make_train_step(arm: str, config: CogFMConfig, batch: torch.Tensor, device: torch.device, bf16: bool):
    """(model, step function) of one arm; every arm starts from the same seed."""
    torch.manual_seed(0)
    if arm.startswith("llama"):
        model = LlamaForCausalLM(llama_twin(config)).to(device).train()
        forward = torch.compile(model) if arm == "llama_compiled" else model

        def loss_of_batch():
            return forward(input_ids=batch, labels=batch).loss

    else:
        model = CogFMForCausalLM(config).to(device).train()
        compiled = arm.startswith("cogfm_compiled")
        model.set_attn_implementation("eager" if arm.endswith("eager") else "sdpa")
        loss_terms = torch.compile(forward_and_loss) if compiled else forward_and_loss
        positions = (torch.arange(batch.shape[1], device=device) % PACKED_DOCUMENT_TOKENS).expand_as(batch)
        ones = torch.ones_like(batch)
        loss_config = LossConfig()  # weights 1, no extra terms: the same cross-entropy as Llama's
        masks = token_weights(batch, ones, torch.zeros_like(batch), -1, batch.new_tensor([-1]), loss_config)
        tokens = masks["weights"].sum()

        def loss_of_batch():
            terms, _ = loss_terms(model, batch, positions, masks, loss_config)
            return terms["total"] / tokens

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # the Trainer's default (adamw_torch_fused)

    def step():
        with _autocast(device, bf16):
            loss = loss_of_batch()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def make_decode(model, prompt, new_tokens, device, bf16):
    def decode():
        with torch.no_grad(), _autocast(device, bf16):
            model.generate(
                prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True
            )

    return decode


def interleaved_times(fns: dict, warmup: int, repeats: int, device) -> tuple[dict, dict]:
    """Seconds per call of each function, timed round-robin; the order flips every round so no arm always runs
    first (caches and clock boosts favour whichever does). Also the seconds of each function's first call."""
    first = {}
    for name, fn in fns.items():
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        first[name] = time.perf_counter() - start
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
    return times, first


def summarise(times: dict, tokens_per_call: int, baseline: str) -> dict:
    """Median tokens/s of each arm and its paired per-round ratio to the baseline (median, min, max)."""
    summary = {}
    for name, arm_times in times.items():
        ratios = sorted(base / mine for base, mine in zip(times[baseline], arm_times))
        summary[name] = {
            "tokens_per_s": tokens_per_call / statistics.median(arm_times),
            "ratio_median": statistics.median(ratios),
            "ratio_min": ratios[0],
            "ratio_max": ratios[-1],
        }
    return summary


def peak_resident_mib() -> float:
    """This process's peak resident set: VmHWM, which starts afresh at exec (getrusage's ru_maxrss keeps the
    parent's peak across fork and exec, so a child started by a large parent would report the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory needs Linux")


def peak_memory_mib(arm: str, argv: list[str], device: torch.device, bf16: bool) -> float:
    """Peak resident set of a fresh process that builds `arm` and runs three steps (a CPU has no allocator
    counter, and this process holds every arm)."""
    precision = "bf16" if bf16 else "fp32"
    command = [sys.executable, "-m", "cogfm_hf.benchmarks.model_speed", *argv]
    command += ["--devices", str(device), "--precisions", precision, "--only-memory-of", arm]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(output.strip().splitlines()[-1])


def benchmark(config: CogFMConfig, device: torch.device, bf16: bool, args, argv: list[str]) -> dict:
    batch = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), device=torch.device("cpu"))
    batch = batch.to(device)
    models, steps = {}, {}
    for arm in args.arms:
        models[arm], steps[arm] = make_train_step(arm, config, batch, device, bf16)
    counts = {arm: sum(p.numel() for p in m.parameters()) for arm, m in models.items()}
    assert len(set(counts.values())) == 1, f"shapes differ: {counts}"
    train, first = interleaved_times(steps, args.warmup, args.repeats, device)
    result = {
        "device": str(device),
        "precision": "bf16-autocast" if bf16 else "fp32",
        "parameters": next(iter(counts.values())),
        "batch": f"{args.batch_size}x{args.seq_len}",
        "repeats": args.repeats,
        "train": summarise(train, args.batch_size * args.seq_len, baseline=args.arms[0]),
        "compile_seconds": {
            arm: max(0.0, first[arm] - statistics.median(train[arm])) for arm in args.arms if "compiled" in arm
        },
    }
    if args.memory:
        result["peak_memory_mib"] = {}
        for arm in args.arms:
            if device.type == "cuda":  # every arm's model is resident: count what this arm's step adds on top
                resident = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                steps[arm]()
                result["peak_memory_mib"][arm] = (torch.cuda.max_memory_allocated(device) - resident) / 2**20
            else:
                result["peak_memory_mib"][arm] = peak_memory_mib(arm, argv, device, bf16)
    if args.new_tokens:
        decoders = {name: models[name].eval() for name in ("cogfm", "llama") if name in models}
        for model in decoders.values():
            model.generation_config.pad_token_id = 0
        prompt = batch[:1, :32]
        decode, _ = interleaved_times(
            {name: make_decode(m, prompt, args.new_tokens, device, bf16) for name, m in decoders.items()},
            1,
            args.repeats,
            device,
        )
        result["decode_shape"] = f"1x32 prompt + {args.new_tokens} new"
        result["decode"] = summarise(decode, args.new_tokens, baseline="llama")
    return result


def benchmark_mixers(config: CogFMConfig, device: torch.device, bf16: bool, args) -> dict:
    """The attention-only `config` (the baseline) against each of `args.mixers`, interleaved in one process."""
    overrides = parse_overrides(args.overrides)
    configs = {args.preset: config, **{name: CogFMConfig.from_preset(name, **overrides) for name in args.mixers}}
    batch = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len)).to(device)
    arm = "cogfm_compiled" if args.compiled else "cogfm"
    models, steps = {}, {}
    for name, arm_config in configs.items():
        models[name], steps[name] = make_train_step(arm, arm_config, batch, device, bf16)
    train, first = interleaved_times(steps, args.warmup, args.repeats, device)
    result = {
        "device": str(device),
        "precision": "bf16-autocast" if bf16 else "fp32",
        "step": arm,
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
        "batch": f"{args.batch_size}x{args.seq_len}",
        "repeats": args.repeats,
        "train": summarise(train, args.batch_size * args.seq_len, baseline=args.preset),
        "compile_seconds": {
            name: max(0.0, first[name] - statistics.median(train[name])) for name in configs if args.compiled
        },
        "decode": {},
    }
    new_tokens = args.new_tokens or 32
    for model in models.values():
        model.eval().generation_config.pad_token_id = 0
    for context in args.decode_contexts:
        prompt = torch.randint(3, config.vocab_size, (1, context)).to(device)
        decoders = {name: make_decode(model, prompt, new_tokens, device, bf16) for name, model in models.items()}
        decode, _ = interleaved_times(decoders, 1, args.repeats, device)
        result["decode"][f"{context}+{new_tokens}"] = summarise(decode, new_tokens, baseline=args.preset)
    return result


def format_mixer_rows(result: dict) -> str:
    header = ["mixers (preset)", "parameters", "what", "tok/s", "ratio to attention-only (min-max)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    timings = [(f"train step ({result['step']}, {result['batch']})", result["train"])]
    timings += [(f"cached decode, prompt {shape.replace('+', ' + ')} new", d) for shape, d in result["decode"].items()]
    for what, summary in timings:
        for name, s in summary.items():
            cells = [
                name,
                f"{result['parameters'][name] / 1e6:.2f} M",
                what,
                f"{s['tokens_per_s']:,.0f}",
                f"{s['ratio_median']:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_rows(results: list[dict]) -> str:
    header = ["device", "precision", "arm", "train tok/s", "ratio to llama (min-max)", "compile s", "peak MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        for arm, s in r["train"].items():
            memory = r.get("peak_memory_mib", {}).get(arm)
            compile_seconds = r["compile_seconds"].get(arm)
            cells = [
                r["device"],
                r["precision"],
                arm,
                f"{s['tokens_per_s']:,.0f}",
                f"{s['ratio_median']:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})",
                "" if compile_seconds is None else f"{compile_seconds:.0f}",
                "" if memory is None else f"{memory:,.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        if "decode" in r:
            d = r["decode"]["cogfm"]
            lines.append(
                f"| {r['device']} | {r['precision']} | decode cogfm vs llama, {r['decode_shape']} | "
                f"{d['tokens_per_s']:,.1f} | {d['ratio_median']:.2f} ({d['ratio_min']:.2f}-{d['ratio_max']:.2f}) | | |"
            )
    return "\n".join(lines)


def parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--overrides: {pair!r} is not FIELD=VALUE")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cogfm-tiny")
    parser.add_argument("--overrides", nargs="*", default=[], help="CogFMConfig FIELD=VALUE pairs")
    parser.add_argument("--arms", nargs="*", choices=TRAIN_ARMS, default=list(DEFAULT_ARMS), help="first: baseline")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=0, help="also time greedy decoding (0: no)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--devices", nargs="*", default=None, help="default: cuda when present, else cpu")
    parser.add_argument(
        "--precisions",
        nargs="*",
        choices=["auto", "fp32", "bf16"],
        default=["auto"],
        help="auto (default): bf16 autocast where the hardware does bf16 natively, else fp32",
    )
    parser.add_argument("--memory", action="store_true", help="also measure each arm's peak memory")
    parser.add_argument("--mixers", nargs="*", default=[], help="presets compared with the attention-only --preset")
    parser.add_argument("--compiled", action="store_true", help="--mixers: compile each training step")
    parser.add_argument("--decode-contexts", nargs="*", type=int, default=[32, 1024], help="--mixers: prompts")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--only-memory-of", help=argparse.SUPPRESS)  # the child process of --memory on a CPU
    args = parser.parse_args(argv)

    config = CogFMConfig.from_preset(args.preset, **parse_overrides(args.overrides))
    devices = args.devices or (["cuda"] if torch.cuda.is_available() else ["cpu"])
    if args.only_memory_of:
        device = torch.device(devices[0])
        bf16 = resolve_bf16("auto" if args.precisions[-1] == "auto" else args.precisions[-1] == "bf16")
        batch = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), device=device)
        _, step = make_train_step(args.only_memory_of, config, batch, device, bf16)
        for _ in range(3):
            step()
        print(peak_resident_mib())
        return
    if args.mixers:
        bad = [name for name in args.mixers if name not in PRESETS]
        if bad:
            parser.error(f"--mixers: unknown preset(s) {bad}; choose from {sorted(PRESETS)}")
        device = torch.device(devices[0])
        bf16 = resolve_bf16("auto" if args.precisions[-1] == "auto" else args.precisions[-1] == "bf16")
        result = benchmark_mixers(config, device, bf16, args)
        print(json.dumps(result), flush=True)
        print(
            f"\ntorch {torch.__version__}, {torch.get_num_threads()} CPU threads, {result['precision']}; medians of "
            f"{args.repeats} interleaved rounds\nCPU: {describe_cpu()}\n"
        )
        print(format_mixer_rows(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return
    results = []
    for device in map(torch.device, devices):
        for precision in args.precisions:
            bf16 = resolve_bf16("auto" if precision == "auto" else precision == "bf16")
            result = benchmark(config, device, bf16, args, argv)
            print(json.dumps(result), flush=True)
            results.append(result)
    print(
        f"\n{args.preset} {parse_overrides(args.overrides) or ''}: {results[0]['parameters']:,} parameters, "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; batch {args.batch_size}x{args.seq_len}; "
        f"medians of {args.repeats} interleaved rounds\nCPU: {describe_cpu()}\n"
    )
    print(format_rows(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
