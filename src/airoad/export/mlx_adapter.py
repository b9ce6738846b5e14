"""A PEFT LoRA/DoRA adapter as an mlx-lm adapter folder: the tensors renamed and transposed, the
config in mlx-lm's terms, or one line saying what mlx-lm cannot represent. No mlx needed here.

mlx-lm's format (``mlx_lm/tuner/utils.py``: ``load_adapters`` and ``linear_to_lora_layers``;
``tuner/lora.py`` and ``tuner/dora.py``):

- ``adapters.safetensors``: ``model.layers.N.<path>.lora_a`` of shape [in, r] and ``lora_b`` of
  shape [r, out], with ``y = W x + scale * (x @ lora_a) @ lora_b``. PEFT stores ``lora_A.weight``
  [r, in] and ``lora_B.weight`` [out, r] with ``y = W x + scale * B A x``, so ``lora_a = A^T`` and
  ``lora_b = B^T``. A DoRA layer's magnitude (PEFT ``lora_magnitude_vector`` [out]) is ``m``; both
  scale the adapted output by ``m / ||W + scale B A||`` (norm over each output row).
- ``adapter_config.json``: ``fine_tune_type`` (lora or dora), ``num_layers`` (the *last* N blocks
  are adapted), ``lora_parameters``: ``rank``, ``scale`` (alpha / r; alpha / sqrt(r) for rsLoRA),
  ``dropout``, ``keys`` (block-relative module paths, the same in every adapted block).

Refused, before anything is written: ``modules_to_save``, trained biases, adapters outside the
transformer blocks (embeddings, the output head), per-module ranks or alphas that differ, blocks
adapted on different modules, adapted blocks that are not the last N, and tensors that are not a
LoRA/DoRA layer's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from airoad.core.base.errors import UserError

LAYER_KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(.+)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector(?:\.weight)?)$"
)


@dataclass
class MlxAdapter:
    """The converted adapter: tensors by mlx-lm name (numpy arrays) and ``adapter_config.json``."""

    tensors: dict[str, Any]
    config: dict[str, Any]


def refusal(why: str) -> UserError:
    return UserError(
        f"export mlx: {why}; mlx-lm cannot load it as an adapter (export gguf, or --fuse after merging)"
    )


def check_config(acfg: dict[str, Any]) -> None:
    """UserError (one line) for what mlx-lm's adapter format cannot express."""
    if acfg.get("peft_type", "LORA") != "LORA":
        raise refusal(f"the adapter is {acfg.get('peft_type')}, not LoRA/DoRA")
    if acfg.get("modules_to_save"):
        raise refusal(f"it trains whole modules too (modules_to_save {acfg['modules_to_save']})")
    if acfg.get("bias", "none") != "none" or acfg.get("lora_bias"):
        raise refusal("it trains biases (bias / lora_bias)")
    for key in ("rank_pattern", "alpha_pattern"):
        if acfg.get(key):
            raise refusal(f"modules have their own ranks or alphas ({key} {acfg[key]})")
    for key in ("layer_replication", "trainable_token_indices", "target_parameters"):
        if acfg.get(key):
            raise refusal(f"it uses {key}")


def convert(acfg: dict[str, Any], weights: dict[str, Any], n_layers: int) -> MlxAdapter:
    """``weights`` (PEFT's adapter tensors by name, numpy) as mlx-lm's adapter; ``n_layers``: the
    model's transformer blocks. UserError for anything mlx-lm cannot hold (module docstring)."""
    check_config(acfg)
    by_layer: dict[int, dict[str, dict[str, Any]]] = {}
    for name, value in weights.items():
        m = LAYER_KEY.match(name)
        if m is None:
            raise refusal(f"tensor {name} is not a LoRA layer inside a transformer block")
        layer, path, part = int(m.group(1)), m.group(2), m.group(3)
        by_layer.setdefault(layer, {}).setdefault(path, {})[part.split(".")[0]] = value
    if not by_layer:
        raise refusal("it holds no LoRA tensors")
    layers = sorted(by_layer)
    if layers != list(range(n_layers - len(layers), n_layers)):
        raise refusal(f"it adapts blocks {layers[0]}..{layers[-1]} of {n_layers}, not the last {len(layers)}")
    keys = sorted(by_layer[layers[0]])
    if any(sorted(by_layer[i]) != keys for i in layers):
        raise refusal("its blocks are adapted on different modules")
    dora = bool(acfg.get("use_dora"))
    r = int(acfg["r"])
    alpha = float(acfg.get("lora_alpha", r))
    scale = alpha / math.sqrt(r) if acfg.get("use_rslora") else alpha / r
    tensors = {}
    for i in layers:
        for path in keys:
            parts = by_layer[i][path]
            a, b = parts.get("lora_A"), parts.get("lora_B")
            if a is None or b is None or a.shape[0] != r or b.shape[1] != r:
                raise refusal(f"block {i} {path} lacks lora_A/lora_B of rank {r}")
            if dora != ("lora_magnitude_vector" in parts):
                raise refusal(
                    f"block {i} {path}: DoRA magnitude {'missing' if dora else 'present'} for a {'DoRA' if dora else 'LoRA'} adapter"
                )
            tensors[f"model.layers.{i}.{path}.lora_a"] = a.T.copy()
            tensors[f"model.layers.{i}.{path}.lora_b"] = b.T.copy()
            if dora:
                tensors[f"model.layers.{i}.{path}.m"] = parts["lora_magnitude_vector"].copy()
    config = {
        "fine_tune_type": "dora" if dora else "lora",
        "num_layers": len(layers),
        "lora_parameters": {"rank": r, "scale": scale, "dropout": 0.0, "keys": keys},
    }
    return MlxAdapter(tensors, config)
