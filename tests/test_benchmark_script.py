"""The benchmark is a script, not a timed test; this only checks that it still runs and reports."""

import json

from transformers import LlamaForCausalLM

from cogfm_hf import CogFMConfig, CogFMForCausalLM
from cogfm_hf.benchmarks import model_speed
from cogfm_hf.benchmarks.model_speed import llama_twin


def test_llama_twin_has_identical_shape():
    config = CogFMConfig.from_preset("cogfm-tiny")
    cogfm, llama = CogFMForCausalLM(config), LlamaForCausalLM(llama_twin(config))
    assert {n: p.shape for n, p in cogfm.named_parameters()} == {n: p.shape for n, p in llama.named_parameters()}


def test_benchmark_script_reports_every_arm_against_the_baseline(tmp_path, capsys):
    out = tmp_path / "bench.json"
    model_speed.main(
        ["--arms", "llama", "cogfm", "--precisions", "fp32", "--batch-size", "2", "--seq-len", "16"]
        + ["--new-tokens", "4", "--warmup", "0", "--repeats", "2", "--memory", "--json", str(out)]
    )
    (result,) = json.loads(out.read_text())
    assert result["precision"] == "fp32" and result["parameters"] == 5770496
    for phase in ("train", "decode"):
        assert set(result[phase]) == {"cogfm", "llama"}
        assert result[phase]["llama"]["ratio_median"] == 1.0  # the baseline against itself
        summary = result[phase]["cogfm"]
        assert summary["tokens_per_s"] > 0 and summary["ratio_min"] <= summary["ratio_median"] <= summary["ratio_max"]
    # Peak memory: each arm in a process of its own, so the figures differ (at least the model's bytes are there).
    assert all(mib > 5770496 * 4 / 2**20 for mib in result["peak_memory_mib"].values())
    assert "| cpu | fp32 | cogfm |" in capsys.readouterr().out


def test_mixer_benchmark_compares_other_mixers_with_attention_only(tmp_path, capsys):
    out = tmp_path / "mixers.json"
    model_speed.main(
        ["--mixers", "cogfm-tiny-canon", "cogfm-tiny-hybrid", "--precisions", "fp32", "--batch-size", "2"]
        + ["--seq-len", "16", "--new-tokens", "2", "--decode-contexts", "8", "--warmup", "0", "--repeats", "2"]
        + ["--json", str(out)]
    )
    result = json.loads(out.read_text())
    names = {"cogfm-tiny", "cogfm-tiny-canon", "cogfm-tiny-hybrid"}
    assert set(result["train"]) == names and set(result["decode"]["8+2"]) == names
    assert result["train"]["cogfm-tiny"]["ratio_median"] == 1.0  # the baseline against itself
    assert result["parameters"]["cogfm-tiny-canon"] > result["parameters"]["cogfm-tiny"]
    assert "| cogfm-tiny-hybrid |" in capsys.readouterr().out


def test_gpu_check_plans_within_the_carry_limit_and_carries_our_versions(capsys):
    """The GPU check itself needs a lent GPU; what a CPU can check: its plan, its carry, its wheel versions."""
    from importlib.metadata import version

    import pytest

    from cogfm_hf.benchmarks import gpu_check

    gpu_check.main(["--dry-run", "--parts", "train_step", "lm_eval"])
    printed = capsys.readouterr().out
    assert "parts: train_step, lm_eval" in printed
    gpu_check.main(["--dry-run"])
    assert "parts: train_step, mixers, fsdp, lm_eval" in capsys.readouterr().out
    carried = gpu_check.tracked_bytes(gpu_check.Path(gpu_check.__file__).resolve().parents[2])
    assert carried + sum(gpu_check.WHEELS.values()) < gpu_check.CARRY_LIMIT_BYTES
    pinned = dict(wheel.split("==") for wheel in gpu_check.WHEELS)
    for package in ("transformers", "peft", "lm_eval", "datasets", "evaluate", "datatrove"):
        assert pinned[package] == version(package), package  # the machine runs what we test here
    with pytest.raises(SystemExit, match="no CUDA device here"):
        gpu_check.main(["--parts", "fsdp"])
