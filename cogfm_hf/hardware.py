"""Facts about the machine a run is on: native bf16, CPU threads, the peak FLOP/s that MFU is measured against.

CPUs differ between our machines: with AVX512-BF16 or AMX a bf16 matmul is several times faster than fp32, on
AVX2-only CPUs it is ~35x slower. So nothing here is assumed; it is read from the machine.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

# bf16 dense peaks (no sparsity) of common accelerators, TFLOP/s.
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in /proc/cpuinfo (None where the file or the field does not exist)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == field), None)


# What PyTorch may use when the process is told to stay at AVX2 (ATen's kernel dispatch and oneDNN's ISA cap): how
# an AVX2-only CPU is emulated on a newer one to measure it (docs/benchmarks.md).
AVX512_AND_LATER = ("avx512", "amx")


def isa_capped_at_avx2() -> bool:
    return (
        os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2"
        or os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2"
    )


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo has none), without the AVX-512 and AMX ones where the
    process is capped at AVX2 (`ATEN_CPU_CAPABILITY=avx2` or `ONEDNN_MAX_CPU_ISA=AVX2`)."""
    flags = set((_cpuinfo("flags") or "").split())
    if isa_capped_at_avx2():
        flags = {flag for flag in flags if not flag.startswith(AVX512_AND_LATER)}
    return flags


def cpu_has_native_bf16() -> bool:
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


def describe_cpu() -> str:
    """What to write next to a CPU figure: the model, the cores, and the flags that decide the fast dtype."""
    model = _cpuinfo("model name") or platform.processor() or platform.machine()
    flags = cpu_flags()
    vector = [flag for flag in ("avx2", "avx512f", *NATIVE_BF16_FLAGS) if flag in flags]
    capped = ", capped at AVX2 (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA)" if isa_capped_at_avx2() else ""
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(vector) or 'none of avx2/avx512'}{capped}"


def describe_device() -> str:
    """Where a run trained: the GPU's name, else `describe_cpu()`."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (x{torch.cuda.device_count()})"
    return describe_cpu()


def resolve_bf16(value: bool | str) -> bool:
    """`bf16: auto` uses bf16 autocast where the hardware does bf16 matmuls natively (CUDA GPUs that support it,
    CPUs with AVX512-BF16 or AMX); elsewhere it stays in fp32."""
    if value != "auto":
        return bool(value)
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def set_cpu_threads(requested: int | None) -> int:
    """`accelerate launch` without a config exports OMP_NUM_THREADS=1, which halves throughput on a 2-core
    machine; CPU runs use the machine's cores shared among its processes instead (or `requested`)."""
    processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = requested or max(1, (os.cpu_count() or 1) // processes_here)
    torch.set_num_threads(threads)
    return threads


def peak_flops(requested_tflops: float | None, bf16: bool) -> tuple[float, str]:
    """The peak FLOP/s for MFU and where it comes from: the recipe's value, the GPU's bf16 datasheet value, or on
    a CPU the best of three 2048^2 GEMMs in the training dtype. 0 where unknown (MFU is then not logged)."""
    if requested_tflops:
        return requested_tflops * 1e12, f"{requested_tflops} TFLOP/s (recipe)"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{tflops} TFLOP/s ({name} bf16 dense datasheet)"
        return 0.0, f"unknown for {name}: set peak_tflops in the recipe"
    dtype, size = (torch.bfloat16 if bf16 else torch.float32), 2048
    a = torch.randn(size, size, dtype=dtype)
    a @ a
    best = 0.0
    for _ in range(3):  # best of three: background load only ever makes a GEMM slower
        start = time.perf_counter()
        a @ a
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best, f"{best / 1e12:.3f} TFLOP/s (best measured {str(dtype).split('.')[-1]} {size}^2 GEMM on this CPU)"
