"""Device and dtype choice: CUDA > MPS > CPU; bf16 where the hardware runs it fast, else fp32.

CPUs without bf16 units (e.g. AVX2-only) run bf16 matmuls hundreds of times slower than fp32
(../shared/DESIGN.md), so CPU defaults to fp32 unless the CPU reports bf16 units.

``AIROAD_CPU_BF16=1`` / ``=0`` overrides that detection (what ``dtype: auto`` picks on CPU): for a
CPU whose flags mislead, and so the test suite can be run in either precision on one machine.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os

import torch

from airoad.core.base.errors import UserError


class DeviceError(UserError):
    """The requested device/dtype cannot work here; the message says what to use instead."""


CPU_BF16_ENV = "AIROAD_CPU_BF16"


def cpu_bf16_units() -> bool:
    """True when the CPU reports native bf16 (AVX512-BF16 or AMX) in /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_bf16() -> bool:
    """Whether ``dtype: auto`` trains in bf16 on CPU: the CPU's bf16 units, unless AIROAD_CPU_BF16
    (1/true/yes or 0/false/no) says otherwise."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if forced in ("1", "true", "yes"):
        return True
    if forced in ("0", "false", "no"):
        return False
    return cpu_bf16_units()


def pick_device(requested: str = "auto") -> str:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda" and not cuda:
        raise DeviceError("device: cuda requested but no CUDA GPU is visible; use --device cpu or auto")
    if requested == "mps" and not mps:
        raise DeviceError("device: mps requested but MPS is not available; use --device cpu or auto")
    return requested


def pick_dtype(device: str, requested: str = "auto") -> torch.dtype:
    if requested == "auto":
        if device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device == "cpu" and cpu_has_bf16():
            return torch.bfloat16
        return torch.float32
    dtype = getattr(torch, requested)
    if device == "cpu" and dtype == torch.float16:
        raise DeviceError("dtype: float16 training is not supported on CPU; use --dtype float32 (or auto)")
    if device == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError("dtype: this GPU has no bfloat16 support; use --dtype float16 or float32")
    return dtype


def check_training_dtype(device: str, dtype: torch.dtype) -> None:
    """Training in float16 needs loss scaling, which PyTorch's GradScaler gives on CUDA only: on
    MPS (as on CPU) fp16 gradients of small LoRA updates underflow to zero. DeviceError there."""
    if device == "mps" and dtype == torch.float16:
        raise DeviceError(
            "dtype: float16 training is not supported on MPS (no loss scaling there); use --dtype float32 (or auto)"
        )


def require_cuda_package(key: str, needs: str, device: str, module: str, pip_name: str) -> None:
    """DeviceError (one line naming ``key`` and how to turn it off) unless the run is on CUDA and
    ``module`` is importable; called before any data or weights load."""

    if device != "cuda":
        raise DeviceError(
            f"{key} needs {needs}; this run is on {device}: set `{key}: false` or run on a CUDA GPU"
        )
    if importlib.util.find_spec(module) is None:
        raise DeviceError(
            f"{key} needs {needs}; {pip_name} is not installed: `pip install {pip_name}`, or set `{key}: false`"
        )


def check_4bit(device: str) -> None:
    """QLoRA needs bitsandbytes' CUDA kernels."""
    require_cuda_package("load_in_4bit", "CUDA and bitsandbytes", device, "bitsandbytes", "bitsandbytes")


def check_liger(device: str) -> None:
    """Liger's kernels are Triton (CUDA); CPU and MPS keep the pure-PyTorch path."""
    require_cuda_package("liger", "a CUDA GPU (Triton kernels)", device, "liger_kernel", "liger-kernel")


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """{distribution: installed version or "not installed"} for each name, in order."""

    out = {}
    for pkg in names:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def describe() -> dict[str, object]:
    """What `airoad env` prints: versions, devices, and the device/dtype a run would use."""
    versions = package_versions(("airoad", "torch", "transformers", "peft", "trl", "datasets", "accelerate"))
    device = pick_device("auto")
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return {
        "versions": versions,
        "devices": devices,
        "cpu_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_bf16_units(),
        "cpu_bf16_forced": os.environ.get(CPU_BF16_ENV) or None,
        "run_device": device,
        "run_dtype": str(pick_dtype(device, "auto")).replace("torch.", ""),
    }
