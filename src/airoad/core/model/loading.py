"""The one loader of tokenizers and causal-LM weights, with one error path, for every command.

Weights load from safetensors only (a pickled ``.bin`` can run code), through
:func:`airoad.core.model.lean_load.load_widened` (a bf16 checkpoint widened to fp32 tensor by tensor, ~1 GB
lower peak). A model named by hub id is resolved first (:mod:`airoad.core.model.model_source`), so an
unreachable hub is one line in a second, not a minute of retries.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airoad.core.base.errors import UserError
from airoad.core.model.model_source import ModelSource, resolve_model
from airoad.core.model.onednn import bound_primitive_cache


class LoadError(UserError):
    """A model, adapter or tokenizer that cannot be used (one line each)."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(e).__name__


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a .safetensors file, from its header alone (no tensor read), or None:
    the 8-byte header length, a JSON header, and every tensor's bytes inside the file."""

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "empty or truncated (no header)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return "truncated (the header runs past the end of the file)"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"unreadable header ({first_line(e)})"
    if not isinstance(header, dict):
        return "unreadable header (not a JSON object)"
    ends = [
        t.get("data_offsets", [0, 0])[1]
        for k, t in header.items()
        if k != "__metadata__" and isinstance(t, dict)
    ]
    if any(not isinstance(e, int) for e in ends) or 8 + n + max(ends, default=0) > size:
        return "truncated (tensor data runs past the end of the file)"
    return None


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (tensor name -> dtype, shape, offsets); {} when it
    cannot be read (:func:`safetensors_problem` says why)."""

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError, struct.error):
        return {}
    return header if isinstance(header, dict) else {}


def check_weight_files(directory: Path, label: str) -> None:
    """LoadError (one line) for the first damaged *.safetensors file in ``directory``."""
    for f in sorted(directory.glob("*.safetensors")):
        if why := safetensors_problem(f):
            raise LoadError(f"{label} {f}: {why}; download or save the weights again")


def _source(model: ModelSource | str, key: str) -> ModelSource:
    return model if isinstance(model, ModelSource) else resolve_model(model, key)


# One parse per tokenizer directory per process: transformers parses Qwen2.5's 11 MB tokenizer.json
# in Python (~1 s on a 2-core CPU), and one command can read the same base's tokenizer up to three
# times (a probe: train, then both sides of compare). Keyed by the directory and each file's size
# and mtime, so an edited tokenizer is read again; callers share the object, which airoad never
# changes after load_tokenizer (a caller that needs other settings copies it first).
_TOKENIZERS: OrderedDict[tuple, Any] = OrderedDict()
_TOKENIZERS_KEPT = 4


def _tokenizer_key(path: str, trust_remote_code: bool) -> tuple | None:
    """The cache key of a local tokenizer directory, or None (not a directory, or unreadable)."""
    try:
        with os.scandir(path) as entries:
            files = sorted(
                (e.name, st.st_size, st.st_mtime_ns) for e in entries if e.is_file() and (st := e.stat())
            )
        return (str(Path(path).resolve()), trust_remote_code, tuple(files))
    except OSError:
        return None


def load_tokenizer(model: ModelSource | str, trust_remote_code: bool = False, key: str = "base_model") -> Any:
    """A fast tokenizer with a chat template and a pad token (eos when the model has none).
    Shared: a directory already read in this process, unchanged since, gives the same object."""
    src = _source(model, key)
    cache_key = _tokenizer_key(src.path, trust_remote_code)
    if cache_key is not None and cache_key in _TOKENIZERS:
        _TOKENIZERS.move_to_end(cache_key)
        return _TOKENIZERS[cache_key]
    tok = _read_tokenizer(src, trust_remote_code, key)
    if cache_key is not None:
        _TOKENIZERS[cache_key] = tok
        while len(_TOKENIZERS) > _TOKENIZERS_KEPT:
            _TOKENIZERS.popitem(last=False)
    return tok


def _read_tokenizer(src: ModelSource, trust_remote_code: bool, key: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src.path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise LoadError(
            f"{key} {src.name!r}: cannot load its tokenizer ({first_line(e)}); give a local model "
            "directory or a hub id that is in the local cache"
        ) from None
    if not getattr(tok, "chat_template", None):
        raise LoadError(f"{key} {src.name!r} has no chat template; use a chat/instruct model")
    if not tok.is_fast:
        raise LoadError(f"{key} {src.name!r} has no fast tokenizer (needed for exact loss masks)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    model: ModelSource | str,
    dtype: Any,
    *,
    trust_remote_code: bool = False,
    key: str = "base_model",
    **kwargs: Any,
) -> Any:
    """``AutoModelForCausalLM`` weights in ``dtype`` from safetensors; ``kwargs`` go to from_pretrained
    (quantization_config, device_map)."""
    from transformers import AutoModelForCausalLM

    from airoad.core.model.lean_load import load_widened

    bound_primitive_cache()  # every command loads its model here, before its first matmul
    src = _source(model, key)
    if Path(src.path).is_dir():
        check_weight_files(Path(src.path), key)
    try:
        return load_widened(
            AutoModelForCausalLM,
            src.path,
            dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **kwargs,
        )
    except (OSError, ValueError) as e:
        raise LoadError(
            f"{key} {src.name!r}: cannot load safetensors weights ({first_line(e)}); give a model "
            "directory with *.safetensors or a hub id in the local cache (pickled .bin weights are "
            "never loaded: they can run code)"
        ) from None


def load_gguf_causal_lm(directory: Any, file_name: str, dtype: Any) -> Any:
    """A GGUF file's model as transformers reads it (``gguf_file=``: dequantized to ``dtype``).
    GGUF holds tensors and metadata only, no code, so this is as safe as safetensors."""
    from transformers import AutoModelForCausalLM

    try:
        with one_gguf_parse():
            return AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=file_name, dtype=dtype)
    except (OSError, ValueError) as e:
        raise LoadError(f"{directory}/{file_name}: cannot read the GGUF back ({first_line(e)})") from None


@contextlib.contextmanager
def one_gguf_parse() -> Iterator[None]:
    """Within: ``gguf.GGUFReader`` parses each file once. transformers reads a GGUF twice (the
    config, then the tensors: ``load_gguf_checkpoint`` imports the reader on each call), and gguf-py
    parses a 151,936-token vocabulary in Python, ~12 s each time on a 2-core CPU; the second read
    reuses the first (the reader memory-maps the file read-only, so sharing it is safe)."""
    import gguf

    real = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = real(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = real


def load_base_for_training(
    source: ModelSource,
    dtype: Any,
    *,
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
    gradient_checkpointing: bool = False,
) -> Any:
    """The frozen base a lane puts adapters on: in ``dtype``, or 4-bit NF4 (QLoRA) with
    ``load_in_4bit``, prepared by peft for k-bit training (fp32 norms, input grads)."""
    if not load_in_4bit:
        return load_causal_lm(source, dtype, trust_remote_code=trust_remote_code)
    from peft import prepare_model_for_kbit_training

    model = load_causal_lm(source, dtype, trust_remote_code=trust_remote_code, **quantization_kwargs(dtype))
    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def load_run_base(source: ModelSource, dtype: Any, cfg: Any) -> Any:
    """:func:`load_base_for_training` with a lane config's shared keys (trust_remote_code,
    load_in_4bit, gradient_checkpointing: :class:`airoad.core.base.runkeys.RunKeys`)."""
    return load_base_for_training(
        source,
        dtype,
        trust_remote_code=cfg.trust_remote_code,
        load_in_4bit=cfg.load_in_4bit,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )


def quantization_kwargs(dtype: Any) -> dict[str, Any]:
    """QLoRA: NF4 base weights with double quantisation, computing in the training dtype, each
    rank's copy on its own GPU (a quantised model cannot be moved after loading)."""

    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    return {"quantization_config": bnb, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def quiet_renames() -> None:
    """transformers 5 renames gradient checkpointing to activation checkpointing; PEFT, the HF
    Trainer and transformers' own loading still call the old names (harmless until v6)."""

    warnings.filterwarnings(
        "ignore", message=r".*(is_)?gradient_checkpointing(_enable)?.*deprecated", category=FutureWarning
    )
