"""The torch side of `airoad export coreml`: a merged causal LM wrapped so that its KV cache is two
module buffers (Core ML states once converted), traced with ``torch.jit.trace``, and checked
against the plain model before anything is converted.

Contract of the wrapper (and of the converted package):

- ``input_ids``  int32 ``[1, q]``: the new tokens (a prompt chunk, or one token when decoding);
- ``causal_mask`` float ``[1, 1, q, end]``: additive mask (0 = attend, -inf or fp16 min = not),
  ``end`` = tokens already in the cache + ``q``; its shape is how the caller tells the model where
  the new tokens go (position of token i = ``end - q + i``), as in Apple's stateful Llama example
  (machinelearning.apple.com/research/core-ml-on-device-llama);
- returns ``logits`` ``[1, 1, vocab]``: the next-token scores after the last new token only
  (``logits_to_keep=1``: a 2k-token prefill would otherwise return 2k x 151,936 scores);
- states ``keyCache`` / ``valueCache`` ``[layers, 1, kv_heads, context, head_dim]`` float16: row
  ``end - q .. end`` of every layer is written, rows ``0 .. end`` are read.

The cache is kept in float16 in torch too, so the traced graph and the converted one store the
same values; the check below therefore measures the model as it will run, cache rounding included.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from transformers.cache_utils import Cache


class SliceCache(Cache):
    """A ``Cache`` that writes into and reads from two preallocated buffers by slicing: the only
    cache operations a traced graph can turn into Core ML ``slice_update`` on a state.

    ``past`` (tokens before this call) is set by the wrapper per call; ``update`` is all the
    attention layers call (transformers 4.56 to 5.x pass the layer index third)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, past: Any) -> None:
        # no super().__init__(): it builds per-layer objects this cache does not use
        self.keys, self.values, self.past = keys, values, past
        self.layers: list[Any] = []

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        end = self.past + key.shape[-2]
        self.keys[layer_idx, :, :, self.past : end] = key.to(self.keys.dtype)
        self.values[layer_idx, :, :, self.past : end] = value.to(self.values.dtype)
        k = self.keys[layer_idx, :, :, :end].to(key.dtype)
        return k, self.values[layer_idx, :, :, :end].to(value.dtype)

    def get_seq_length(self, layer_idx: int = 0) -> Any:
        return self.past

    @property
    def is_compileable(self) -> bool:
        return False


def cache_shape(config: Any, context: int) -> tuple[int, int, int, int, int]:
    """``[layers, 1, kv_heads, context, head_dim]`` of each of the two states."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return (config.num_hidden_layers, 1, kv_heads, context, head_dim)


def _cache_kwarg(model: Any) -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name warns until 5.40)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class StatefulLM(torch.nn.Module):
    """``model`` (a merged causal LM, eval mode) with its KV cache as buffers ``keyCache`` and
    ``valueCache`` of ``context`` positions (module docstring for the call contract)."""

    def __init__(self, model: Any, context: int) -> None:
        super().__init__()
        self.model = model
        shape = cache_shape(model.config, context)
        self.register_buffer("keyCache", torch.zeros(shape, dtype=torch.float16))
        self.register_buffer("valueCache", torch.zeros(shape, dtype=torch.float16))
        self.cache_kwarg = _cache_kwarg(model)

    def forward(self, input_ids: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        q, end = input_ids.shape[-1], causal_mask.shape[-1]
        past = end - q
        cache = SliceCache(self.keyCache, self.valueCache, past)
        positions = torch.arange(q, device=input_ids.device).unsqueeze(0) + past
        out = self.model(
            input_ids=input_ids,
            attention_mask=causal_mask.to(self.model.dtype),
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kwarg: cache},
        )
        return out.logits


STATES = ("keyCache", "valueCache")


def reset(module: Any) -> None:
    """Empty the cache of a :class:`StatefulLM` or its trace (traced modules keep buffers, not methods)."""
    for name in STATES:
        getattr(module, name).zero_()


def causal_mask(q: int, end: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[1, 1, q, end]`` additive mask for ``q`` new tokens after ``end - q`` cached ones: new
    token i sees cache rows ``0 .. end - q + i``. The caller builds this (Swift: examples/swift)."""
    past = end - q
    rows = torch.arange(q).unsqueeze(1) + past
    cols = torch.arange(end).unsqueeze(0)
    mask = torch.zeros(q, end, dtype=dtype)
    mask[cols > rows] = torch.finfo(torch.float16).min  # fp16 min: representable in the package
    return mask.view(1, 1, q, end)


def trace(model: Any, context: int, example_len: int = 4) -> torch.jit.ScriptModule:
    """The wrapper traced on a prompt of ``example_len`` (>= 2) tokens after ``example_len``
    cached ones. Traced with q >= 2 and a non-empty cache on purpose: transformers' attention
    picks a single-query path when q == 1, and a trace freezes whichever path it saw."""

    if example_len < 2:
        raise ValueError("example_len must be >= 2 (see docstring)")
    wrapper = StatefulLM(model, context).eval()
    ids = torch.zeros(1, example_len, dtype=torch.int32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about python bools in transformers' code
        traced = torch.jit.trace(wrapper, (ids, causal_mask(example_len, 2 * example_len)))
    reset(traced)  # the example call wrote into the cache
    return traced


def parity(traced: Any, model: Any, chats: list[torch.Tensor], chunk: int = 3) -> dict[str, Any]:
    """Run each chat ``[1, T]`` through ``traced`` with its cache (a prefill of half the tokens in
    chunks of ``chunk``, then one token per call) and compare every returned next-token logit row
    with ``model``'s own full-sequence forward at the same position. Returns max |dlogit|, the
    largest logit, argmax agreement and how many positions were compared. Chats longer than the
    cache are cut to its length."""
    context = traced.keyCache.shape[3]
    chats = [ids[:, :context] for ids in chats]
    diff = scale = 0.0
    agree = positions = 0
    with torch.no_grad():
        for ids in chats:
            want = model(input_ids=ids).logits.float()[0]
            reset(traced)
            for start, stop in _steps(ids.shape[1], chunk):
                got = traced(ids[:, start:stop].to(torch.int32), causal_mask(stop - start, stop))
                got = got.float()[0, -1]
                diff = max(diff, float((got - want[stop - 1]).abs().max()))
                scale = max(scale, float(want[stop - 1].abs().max()))
                agree += int(got.argmax() == want[stop - 1].argmax())
                positions += 1
    reset(traced)
    return {"max_abs_dlogit": diff, "max_abs_logit": scale, "argmax_agreement": agree / positions,
            "positions": positions, "chats": len(chats)}  # fmt: skip


def _steps(length: int, chunk: int) -> list[tuple[int, int]]:
    """(start, stop) of each call: the first half of ``length`` in chunks of ``chunk`` tokens
    (a chunked prefill: q > 1 with a cache), then one token per call (decode)."""
    half = max(1, length // 2)
    steps = [(s, min(s + chunk, half)) for s in range(0, half, chunk)]
    return steps + [(t, t + 1) for t in range(half, length)]


QUANT_MIN_ELEMENTS = 2048  # coremltools' default weight_threshold: smaller tensors stay fp16
QUANT_LEVELS = {"int8": 127, "int4": 7}  # symmetric signed range [-L, L], as coremltools uses
INT4_BLOCK = 32


def fake_quantize_(model: Any, quant: str) -> Any:
    """``model`` with the weights coremltools will compress rounded the way it rounds them, in place
    (fp16 first; symmetric linear; int8 per output channel, int4 per block of 32 input channels;
    every Linear and Embedding weight above coremltools' size threshold). Measures what the
    package's compression does to the logits, on a machine that cannot run the package."""
    if quant not in QUANT_LEVELS:
        return model
    levels = QUANT_LEVELS[quant]
    with torch.no_grad():
        for module in model.modules():
            if (
                isinstance(module, (torch.nn.Linear, torch.nn.Embedding))
                and module.weight.numel() > QUANT_MIN_ELEMENTS
            ):
                module.weight.copy_(_rounded(module.weight.half().float(), levels, quant == "int4"))
    return model


def _rounded(w: torch.Tensor, levels: int, blockwise: bool) -> torch.Tensor:
    """``w`` [out, in] quantized and dequantized: scale = max |w| / levels per row (or per block)."""
    rows, cols = w.shape
    blocks = (
        w.view(rows, cols // INT4_BLOCK, INT4_BLOCK)
        if blockwise and cols % INT4_BLOCK == 0
        else w.view(rows, 1, cols)
    )
    # coremltools computes on the fp16 weights: an fp16 scale, fp16 division, round, clip to [-L, L]
    scale = (blocks.abs().amax(dim=-1, keepdim=True) / levels).half()
    ratio = (blocks.half() / torch.where(scale > 0, scale, torch.ones_like(scale))).float()
    q = torch.where(scale > 0, torch.round(ratio).clamp(-levels, levels) * scale.float(), 0.0)
    return q.view(rows, cols)
