"""Machine facts are read from the machine (cogfm_hf.hardware), never assumed."""

from pathlib import Path

import pytest
import torch

from cogfm_hf.hardware import cpu_flags, cpu_has_native_bf16, describe_cpu, peak_flops, resolve_bf16, set_cpu_threads


def test_native_bf16_follows_the_cpu_flags():
    flags = cpu_flags()
    if not flags:
        pytest.skip("no x86 `flags` line in /proc/cpuinfo on this machine")
    text = Path("/proc/cpuinfo").read_text()
    assert all(flag in text for flag in flags)
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    if not torch.cuda.is_available():
        assert resolve_bf16("auto") == cpu_has_native_bf16()
    assert resolve_bf16(False) is False and resolve_bf16(True) is True
    assert ("avx512_bf16" in describe_cpu()) == ("avx512_bf16" in flags)


def test_a_process_capped_at_avx2_has_no_native_bf16_and_says_so(monkeypatch):
    """How an AVX2-only machine is emulated on a newer one: the ISA cap PyTorch obeys, obeyed here too."""
    if not cpu_flags():
        pytest.skip("no x86 `flags` line in /proc/cpuinfo on this machine")
    uncapped = cpu_flags()
    for variable, value in (("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")):
        with monkeypatch.context() as patch:
            patch.setenv(variable, value)
            assert cpu_flags() == {flag for flag in uncapped if not flag.startswith(("avx512", "amx"))}
            assert not cpu_has_native_bf16() and "capped at AVX2" in describe_cpu()
            if not torch.cuda.is_available():
                assert resolve_bf16("auto") is False


def test_cpu_threads_and_the_peak_mfu_is_measured_against(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert peak_flops(12.5, bf16=False) == (12.5e12, "12.5 TFLOP/s (recipe)")
    if not torch.cuda.is_available():
        measured, note = peak_flops(None, bf16=False)
        assert measured > 1e9 and "measured float32" in note
