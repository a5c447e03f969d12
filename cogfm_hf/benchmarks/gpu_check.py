"""The prepared GPU check: one command on a lent GPU machine, figures out in ~4 minutes.

    python -m cogfm_hf.benchmarks.gpu_check --download-wheels .whl   # here, once: the wheels the machine lacks
    python -m cogfm_hf.benchmarks.gpu_check --dry-run                # here: what it would run, and the carry size

On the machine (the `device` tool's `run`, carry [".whl"]), one command:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    && export PYTHONPATH=/tmp/site && python3 -m pip install -q --no-index --no-deps --no-build-isolation
    --target /tmp/site . && PYTHONUNBUFFERED=1 python3 -m cogfm_hf.benchmarks.gpu_check --out $OUT

The machine has its own torch (2.11 there), CUDA and most of what we need; what it lacks, or has at another version,
travels as pure-Python wheels (WHEELS, < 64 MiB with the repository), and this package installs without its
dependencies, so it must import and run on that torch. Parts, each timed, each written to OUT/gpu_check.json as it
ends (a part that fails is recorded as failed, the others still run):

  train_step   bf16 train-step tokens/s and MFU (against the GPU's bf16 dense datasheet peak, attention FLOPs
               counted: cogfm_hf.presets.train_flops_per_token) for cogfm-125m and cogfm-1b beside the same-shape
               LlamaForCausalLM, eager and compiled (cogfm_hf.benchmarks.model_speed's arms)
  mixers       the Canon and hybrid presets against attention-only cogfm-tiny (model_speed --mixers, compiled; the
               Mamba-2 scan on transformers' torch path unless mamba-ssm is installed there)
  fsdp         a 1-GPU `accelerate launch --config_file training/accelerate/fsdp.yaml` pretraining run of a few
               steps on generated tasks: it saves, is resumed from its checkpoint, and consolidates its weights
  lm_eval      the cogfm_all group on the GPU, on the consolidated checkpoint
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

# What the machine lacks or has at another version (KINDS.md of the device tool lists what it has): pure-Python
# wheels for Python 3.12, with their sizes in bytes, so a test can hold the carry under its limit without a download.
WHEELS = {
    "transformers==5.23.0": 13_336_114,  # the machine has 5.17
    "peft==0.21.2": 835_427,
    "lm_eval==0.4.13": 9_149_387,
    "datasets==5.2.0": 608_276,
    "evaluate==0.4.6": 84_069,
    "datatrove==0.10.1": 17_357_820,  # the data build (generated tasks only: no spaCy model needed)
    "dill==0.4.1": 120_019,
    "multiprocess==0.70.19": 150_281,
    "loguru==0.7.3": 61_595,
    "more_itertools==11.2.1": 74_405,
    "pytablewriter==1.2.1": 91_083,  # lm_eval's result tables, and what they import
    "DataProperty==1.1.1": 27_691,
    "mbstrdecoder==1.1.5": 7_966,
    "tabledata==1.3.5": 11_919,
    "tcolorpy==0.1.7": 8_096,
    "typepy==2.0.0": 31_369,
    "chardet==7.7.0": 1_658_969,
}
CARRY_LIMIT_BYTES = 64 * 2**20  # the device tool's limit on what travels: the working tree and the wheels
# batch, sequence length and arms (cogfm_hf.benchmarks.model_speed) per preset, sized for one H200 and the ~4 minutes:
# every arm at 125m; at 1b the baseline and what `compile: true` trains (each compile there takes a minute or so).
PRESETS = {
    "cogfm-125m": (16, 2048, ["llama", "llama_compiled", "cogfm", "cogfm_compiled"]),
    "cogfm-1b": (4, 2048, ["llama", "cogfm_compiled"]),
}
FSDP_STEPS = 6
MIXER_PRESETS = ["cogfm-tiny-canon", "cogfm-tiny-hybrid"]  # against attention-only cogfm-tiny
PARTS = ("train_step", "mixers", "fsdp", "lm_eval")


def download_wheels(directory: Path) -> None:
    """pip download of WHEELS for the machine's Python (3.12, manylinux x86-64), as the device tool's README says."""
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version"]
    command += ["3.12", "--implementation", "cp", "-d", str(directory), *WHEELS]
    for platform in platforms:
        command += ["--platform", platform]
    subprocess.run(command, check=True)


def tracked_bytes(repository: Path) -> int:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=repository, capture_output=True, check=True).stdout
    return sum((repository / name).stat().st_size for name in files.decode().split("\0") if name)


def train_step(out: Path, repeats: int) -> dict:
    import torch

    from ..hardware import peak_flops
    from ..modeling.configuration_cogfm import CogFMConfig
    from ..presets import train_flops_per_token
    from . import model_speed

    peak, peak_note = peak_flops(None, bf16=True)
    results = {"peak": peak_note}
    for preset, (batch, seq_len, arms) in PRESETS.items():
        config = CogFMConfig.from_preset(preset, qk_norm=False)
        argv = ["--preset", preset, "--overrides", "qk_norm=false", "--precisions", "bf16", "--devices", "cuda"]
        argv += ["--batch-size", str(batch), "--seq-len", str(seq_len), "--repeats", str(repeats), "--warmup", "1"]
        argv += ["--arms", *arms]
        argv += ["--memory", "--json", str(out / f"model_speed_{preset}.json")]
        model_speed.main(argv)
        (result,) = json.loads((out / f"model_speed_{preset}.json").read_text())
        flops = train_flops_per_token(config, seq_len)
        for arm, summary in result["train"].items():
            summary["mfu"] = flops * summary["tokens_per_s"] / peak if peak else None
        results[preset] = result
        torch.cuda.empty_cache()
    return results


def mixers(out: Path, repeats: int) -> dict:
    from . import model_speed

    argv = ["--mixers", *MIXER_PRESETS, "--compiled", "--precisions", "bf16", "--devices", "cuda"]
    argv += ["--batch-size", "32", "--seq-len", "1024", "--repeats", str(repeats), "--warmup", "1"]
    argv += ["--decode-contexts", "32", "2048", "--json", str(out / "model_speed_mixers.json")]
    model_speed.main(argv)
    return json.loads((out / "model_speed_mixers.json").read_text())


def fsdp(out: Path, repository: Path) -> dict:
    """A few FSDP2 steps that save, a resume that continues them, and the consolidated checkpoint."""
    import yaml

    run = out / "fsdp_run"
    recipe = {
        "data": {
            "output_dir": str(out / "fsdp_data"),
            "workers": 4,
            "sources": [{"name": "reasoning", "type": "tasks", "num_examples": 2000, "seed": 0}],
            "tokenizer": {"vocab_size": 1024, "train_chars": 200_000},
            "pack": {"seq_len": 256},
        },
        "model": {"preset": "cogfm-tiny"},
        "training": {
            "output_dir": str(run),
            "max_steps": FSDP_STEPS,
            "per_device_train_batch_size": 8,
            "save_steps": FSDP_STEPS // 2,
            "logging_steps": 1,
            "report_to": "none",
        },
        "eval": {"enabled": False},
    }
    recipe_file = out / "fsdp_recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launch += [str(repository / "training" / "accelerate" / "fsdp.yaml"), "--num_processes", "1"]
    launch += [str(repository / "training" / "pretrain.py"), str(recipe_file)]
    first = subprocess.run([*launch, "--max_steps", str(FSDP_STEPS // 2)], capture_output=True, text=True)
    if first.returncode:
        raise RuntimeError(f"first launch failed:\n{first.stderr[-4000:]}")
    resumed = subprocess.run([*launch, "--resume_from_checkpoint", "latest"], capture_output=True, text=True)
    if resumed.returncode or "resume: from" not in resumed.stdout:
        raise RuntimeError(f"resumed launch failed:\n{resumed.stdout[-2000:]}\n{resumed.stderr[-4000:]}")
    state = json.loads((run / f"checkpoint-{FSDP_STEPS}" / "trainer_state.json").read_text())
    return {
        "losses": [entry["loss"] for entry in state["log_history"] if "loss" in entry],
        "consolidated": (run / "model.safetensors").is_file(),
        "checkpoints": sorted(p.name for p in run.glob("checkpoint-*")),
    }


def lm_eval(out: Path, limit: int) -> dict:
    from ..training.evaluation import run_lm_eval, scores

    start = time.perf_counter()
    results = run_lm_eval(out / "fsdp_run", ["cogfm_all"], limit=limit, batch_size=64, device="cuda")
    return {"seconds": time.perf_counter() - start, "scores": scores(results)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="where the figures go")
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=None)
    parser.add_argument("--repeats", type=int, default=4, help="interleaved rounds of each train-step arm")
    parser.add_argument("--eval-limit", type=int, default=20)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the carry size; run nothing")
    parser.add_argument("--download-wheels", type=Path, help="download WHEELS into this folder and stop")
    args = parser.parse_args(argv)
    repository = Path(__file__).resolve().parents[2]
    parts = args.parts or list(PARTS)
    if args.download_wheels:
        download_wheels(args.download_wheels)
        return
    carry = tracked_bytes(repository) + sum(WHEELS.values())
    if args.dry_run:
        presets = "; ".join(f"{name} {b}x{n} {', '.join(arms)}" for name, (b, n, arms) in PRESETS.items())
        print(
            f"parts: {', '.join(parts)}; train steps: {presets}; mixers: {', '.join(MIXER_PRESETS)} against "
            f"cogfm-tiny; FSDP steps {FSDP_STEPS}; eval limit {args.eval_limit}"
        )
        print(f"carry: {carry / 2**20:.1f} MiB of {CARRY_LIMIT_BYTES / 2**20:.0f} (repository + {len(WHEELS)} wheels)")
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; it runs on a lent GPU machine (see its docstring)")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "parts": {}}
    steps = {
        "train_step": lambda: train_step(args.out, args.repeats),
        "mixers": lambda: mixers(args.out, args.repeats),
        "fsdp": lambda: fsdp(args.out, repository),
        "lm_eval": lambda: lm_eval(args.out, args.eval_limit),
    }
    for part in parts:
        start = time.perf_counter()
        try:
            report["parts"][part] = {"status": "ok", **steps[part]()}
        except Exception:  # a failed part is a finding; the other parts still run
            report["parts"][part] = {"status": "failed", "error": traceback.format_exc()[-4000:]}
        report["parts"][part]["seconds"] = round(time.perf_counter() - start, 1)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        print(
            f"gpu_check: {part} {report['parts'][part]['status']} in {report['parts'][part]['seconds']} s", flush=True
        )


if __name__ == "__main__":
    main()
