"""Choices that every command's schema shares (training lanes and inference tools alike).
Nothing here imports torch."""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
