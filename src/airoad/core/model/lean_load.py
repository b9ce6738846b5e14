"""Load a checkpoint into a wider dtype without holding the file and the converted copy at once.

    model = load_widened(AutoModelForCausalLM, "Qwen/Qwen2.5-0.5B-Instruct", torch.float32)

Why: checkpoints ship in bf16, CPUs without bf16 units train in fp32. ``from_pretrained(dtype=
float32)`` reads the memory-mapped bf16 file and keeps every page it touched resident until the
whole model is built, so the load peaks at file + fp32 copy (3.9 GB for Qwen2.5-0.5B, measured,
against 2.7 GB once loaded). Here transformers loads in the file's dtype (lazily mapped, nothing
copied), then each parameter is widened in turn and the mapped file pages it came from are
released (``madvise(MADV_DONTNEED)``, Linux). Peak: fp32 model + one tensor (3.0 GB measured).

Only pages of read-only *file* mappings are released (checked against /proc/self/maps), so
anonymous memory can never be zeroed; where that is unavailable (macOS, Windows) the result is
the same model with the ordinary peak. Values are bit-identical to a direct fp32 load (widening
bf16 -> fp32 is exact).
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from typing import Any

import torch

_MADV_DONTNEED = 4


def _file_mappings(suffix: str = ".safetensors") -> list[tuple[int, int]]:
    """(start, end) of this process's mappings of files whose name ends with ``suffix``."""
    spans = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[-1].endswith(suffix):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    spans.append((lo, hi))
    except OSError:
        return []
    return spans


def _release(t: torch.Tensor, spans: list[tuple[int, int]], libc: Any) -> bool:
    """Drop the whole pages under ``t`` from RSS if they lie inside a mapped checkpoint file."""
    start, n = t.data_ptr(), t.numel() * t.element_size()
    if not any(lo <= start and start + n <= hi for lo, hi in spans):
        return False
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, (start + n) // page * page
    return hi > lo and libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_DONTNEED) == 0


def widen_(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast floating parameters and buffers to ``dtype`` in place, one tensor at a time, releasing
    checkpoint file pages as it goes. Returns how many tensors had their pages released."""
    spans = _file_mappings() if sys.platform.startswith("linux") else []
    libc = ctypes.CDLL(None) if spans else None
    released = 0
    with torch.no_grad():
        for p in {id(p): p for p in model.parameters()}.values():  # tied weights once
            if p.is_floating_point() and p.dtype != dtype:
                old = p.data
                p.data = old.to(dtype)
                released += bool(spans) and _release(old, spans, libc)
        for mod in model.modules():
            for name, b in list(mod._buffers.items()):
                if b is not None and b.is_floating_point() and b.dtype != dtype:
                    mod._buffers[name] = b.to(dtype)
    model.config.dtype = dtype
    return released


def checkpoint_dtype(config: Any) -> torch.dtype | None:
    """The dtype the checkpoint is stored in, when its config says."""
    d = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(d, str):
        d = getattr(torch, d, None)
    return d if isinstance(d, torch.dtype) else None


def load_widened(auto_cls: Any, name: str, dtype: torch.dtype, **kw: Any) -> Any:
    """``auto_cls.from_pretrained(name, dtype=dtype, **kw)`` with a lower memory peak when the
    checkpoint is stored narrower than ``dtype`` (bf16/fp16 file, fp32 training)."""
    from transformers import AutoConfig

    config = kw.pop("config", None) or AutoConfig.from_pretrained(
        name, trust_remote_code=kw.get("trust_remote_code", False)
    )
    stored = checkpoint_dtype(config)
    narrower = stored is not None and stored.is_floating_point and stored.itemsize < dtype.itemsize
    # The config read here is handed on, so the model's config is read from disk once.
    if not narrower or dtype != torch.float32 or kw.get("quantization_config") is not None:
        return auto_cls.from_pretrained(name, config=config, dtype=dtype, **kw)
    model = auto_cls.from_pretrained(name, config=config, dtype=stored, **kw)
    widen_(model, dtype)
    return model
