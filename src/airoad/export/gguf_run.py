"""`airoad export gguf`: a tune as one GGUF file for llama.cpp and Ollama, checked before it is kept.

    airoad export gguf --adapters outputs/qwen05b_fast_plain --out exports/fast_plain_gguf --quant q8_0

1. Before any weights load: ``--quant`` is one gguf-py writes (f16, bf16, q8_0; K-quants need
   llama.cpp's quantizer), the adapter dir is usable, and ``--out`` is empty or absent
   (``--overwrite true`` replaces one airoad wrote), not an input, not inside or around one.
2. The base loads in float32 (``--base_model``, else the run's recorded base) and a LoRA or DoRA adapter
   is merged in with PEFT ``merge_and_unload`` (:mod:`airoad.core.model.merging`); ``--base_model`` alone
   exports that (merged) checkpoint.
3. :func:`airoad.export.gguf.write_gguf` writes ``NAME-QUANT.gguf`` into a staging dir beside ``--out``.
4. Check: transformers reads the GGUF back (``from_pretrained(dir, gguf_file=...)``, which
   dequantizes it) and both models score the check chats; max |dlogit| and next-token argmax
   agreement over every position are printed. Agreement below ``--min_argmax_agreement``: exit 1,
   the staging dir is deleted, nothing is written.
5. ``Modelfile`` (Ollama) and ``export_info.json`` (inputs, quant, file size, check numbers,
   versions) join the GGUF, and the staging dir is renamed to ``--out`` (an old ``--out`` is
   swapped out whole).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airoad.core.base.commands import Invocation
from airoad.core.base.errors import CheckFailed, UserError
from airoad.core.base.io import write_json, write_text
from airoad.core.base.outputs import staged_dir
from airoad.core.model.adapter_source import Source, resolve_source
from airoad.core.model.loading import load_gguf_causal_lm
from airoad.core.model.merging import load_merged
from airoad.export import llama_cpp_check
from airoad.export.common import (
    CHECK_CHATS,
    INFO,
    chat_ids,
    compare_logits,
    system_line,
)
from airoad.export.gguf import write_gguf
from airoad.export.ollama import modelfile
from airoad.export.schema import GgufConfig

MODELFILE = "Modelfile"


def read_back(stage: Path, file_name: str, device: str) -> Any:
    """The GGUF as transformers loads it (dequantized to float32, eval mode)."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own lines say what is loading
    # transformers' GGUF reader draws its own tqdm bar (not the hub's): quiet it for this call
    with quiet_gguf_progress():
        model = load_gguf_causal_lm(stage, file_name, torch.float32)
    return model.to(device).eval()


def quiet_gguf_progress() -> Any:
    """Context in which transformers' GGUF tensor loop shows no progress bar."""
    from unittest import mock

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    if not hasattr(gguf_utils, "tqdm"):
        return contextlib.nullcontext()
    return mock.patch.object(gguf_utils, "tqdm", lambda it, *a, **k: it)


def verify(
    model: Any, tokenizer: Any, gguf_path: Path, system: str | None, threshold: float
) -> dict[str, Any]:
    """Read the GGUF at ``gguf_path`` back onto ``model``'s device and compare it with ``model`` on
    the check chats (``system`` first); CheckFailed when argmax agreement < ``threshold``."""
    device = str(model.device)
    exported = read_back(gguf_path.parent, gguf_path.name, device)
    check = compare_logits(model, exported, chat_ids(tokenizer, system), device)
    check["min_argmax_agreement"] = threshold
    if not check["argmax_agreement"] >= threshold:
        raise CheckFailed(
            f"check failed: the GGUF's next-token argmax agrees with the tuned model's on "
            f"{check['argmax_agreement']:.1%} of {check['positions']} positions < --min_argmax_agreement "
            f"{threshold:g} (max |dlogit| {check['max_abs_dlogit']:.3g}); nothing written"
        )
    return check


def run(cfg: GgufConfig, inv: Invocation) -> None:
    """`airoad export gguf` as the core runs it (inputs resolved, ``--out`` checked and held)."""
    require_gguf()
    export(cfg, inv.printer, inv.source)


def export(cfg: GgufConfig, printer: Callable[[str], None] = print, source: Source | None = None) -> Path:
    """Run the export (module docstring) of ``source`` (the CLI's runner resolved it and checked
    ``--out``; a Python caller without one gets ``cfg``'s resolved here); returns ``--out``."""
    source = source or resolve_source(cfg.base_model, cfg.adapters)
    from transformers.utils import logging as hf_logging

    from airoad.core.model.devices import pick_device
    from airoad.core.run.artifacts import library_versions

    hf_logging.disable_progress_bar()  # our own lines say what is loading
    quant = cfg.quant.lower()
    out = Path(cfg.out).expanduser()
    for note in source.notes:
        printer(note)
    what = f"{source.base} + {source.adapters} ({source.adapter_kind})" if source.adapters else source.base
    device = pick_device(cfg.device)
    printer(f"export gguf: {what}, merged in float32 on {device}, written as {quant}")
    model, tokenizer = load_merged(source, device)
    system = system_line(cfg, source, tokenizer)
    file_name = f"{cfg.name}-{quant}.gguf"
    with staged_dir(out, "export", "airoad export gguf") as (stage, scratch):
        written = write_gguf(model, tokenizer, stage / file_name, quant, scratch)
        size = (stage / file_name).stat().st_size
        printer(f"wrote {file_name}: {size / 2**20:.1f} MiB, tensors {written['tensor_types']}")
        check = verify(model, tokenizer, stage / file_name, system, cfg.min_argmax_agreement)
        printer(check_line(check))
        generation = llama_cpp_generation(model, tokenizer, stage / file_name, system, printer)
        info = {
            "base": source.base,
            "adapters": str(source.adapters) if source.adapters else None,
            "adapter": source.adapter_kind or None,
            "quant": quant,
            "file": file_name,
            "file_size": size,
            **written,
            "system_prompt": system,
            "check": check,
            "llama_cpp_generation": generation,
            "versions": library_versions(extra=("gguf",)),
        }
        write_outputs(stage, file_name, system, info)
    printer(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    printer(f"run it: ollama create my-tune -f {out / MODELFILE}   or   llama-cli -m {out / file_name}")
    return out


def llama_cpp_generation(
    model: Any, tokenizer: Any, gguf_path: Path, system: str | None, printer: Callable[[str], None]
) -> dict[str, Any] | None:
    """Greedy generation through llama.cpp vs transformers on the check chats' first user turns
    (:mod:`airoad.export.llama_cpp_check`); None, with a line saying how to get it, without
    llama-cpp-python."""

    if not llama_cpp_check.available():
        printer("llama.cpp generation check skipped: pip install llama-cpp-python to run it")
        return None
    head = [{"role": "system", "content": system}] if system else []
    prompts = [
        tokenizer.apply_chat_template(head + chat[:1], tokenize=False, add_generation_prompt=True)
        for chat in CHECK_CHATS
    ]
    result = llama_cpp_check.compare(gguf_path, model, tokenizer, prompts)
    printer(llama_cpp_check.line(result))
    return result


def check_line(check: dict[str, Any]) -> str:
    return (
        f"verified: transformers reads the GGUF back; on {check['chats']} chats ({check['positions']} "
        f"positions) max |dlogit| {check['max_abs_dlogit']:.3g} (logits up to {check['max_abs_logit']:.3g}), "
        f"argmax agreement {check['argmax_agreement']:.1%} >= {check['min_argmax_agreement']:g}"
    )


def write_outputs(stage: Path, file_name: str, system: str | None, info: dict[str, Any]) -> None:
    """Modelfile and export_info.json beside the GGUF."""

    write_text(stage / MODELFILE, modelfile(file_name, system))
    write_json(stage / INFO, info)


def require_gguf() -> None:
    """UserError naming the install line when the ``gguf`` package is missing."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError(
            'the gguf package is not installed; pip install -e ".[export]" (or pip install gguf)'
        ) from None
