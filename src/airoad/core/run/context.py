"""What one training run knows once its config, data, output_dir and model source are checked:
handed from a lane's entry to the core's skeleton (:mod:`airoad.core.run.fit`) and its artifacts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airoad.core.data.chat_data import LoadStats
from airoad.core.model.model_source import ModelSource


@dataclass
class RunContext:
    """``cfg``: the lane's config dataclass; ``ckpt``: the checkpoint a --resume continues from;
    ``printer``: where this rank's lines go (a no-op on ranks other than 0)."""

    cfg: Any
    out: Path
    ckpt: Path | None
    device: str
    dtype: Any
    source: ModelSource
    tokenizer: Any
    stats: LoadStats
    t_start: float
    printer: Callable[[str], Any] = print
