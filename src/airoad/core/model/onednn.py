"""A bound on oneDNN's primitive cache, so a bf16 CPU run's memory does not grow with every new
sequence length. :func:`airoad.core.model.loading.load_causal_lm`, the one model loader, calls it: every
command and every Python caller loads its model there before the model's first matmul.

Why (measured on Qwen2.5-0.5B, bf16 LoRA, GSM8K, ``bench/profile_step.py``; BENCHMARKS.md): torch
runs bf16 matmuls on the CPU through oneDNN, which caches one primitive per distinct problem shape,
1024 by default, each with its own buffers. Every example length is a new set of shapes (about 32
per micro-batch: ``ONEDNN_VERBOSE=1`` lists 256 distinct ones over 8 micro-batches), so the cache
fills with primitives of lengths never seen again: the process grew by ~0.15 GB per optimizer step
and peaked at 2.76 GB over 6 steps, against 2.56 GB with a capacity of 64 at the same speed (each
shape is still built once per micro-batch and reused by all its layers; a capacity of 0 rebuilds
every call and halves the speed). The fp32 path runs through MKL and is unaffected.

A value the user set (``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` in the environment) is kept. oneDNN
reads it when it builds its first primitive (checked: setting it after ``import torch`` but before
the first matmul takes effect), so this must run before the first matmul.
"""

from __future__ import annotations

import os

ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
CAPACITY = 64  # two micro-batches' worth of shapes (~32 each)


def bound_primitive_cache() -> None:
    """Set oneDNN's primitive cache capacity to :data:`CAPACITY` unless the environment sets one."""
    os.environ.setdefault(ENV, str(CAPACITY))
