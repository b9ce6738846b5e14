"""`airoad export coreml`: a tune as one Core ML package (stateful KV cache, one function per
context length) for iOS 18 / macOS 15, checked before it is kept.

    airoad export coreml --adapters outputs/qwen05b_fast_plain --out exports/fast_plain_coreml --context 2048,4096 --quant int4

1. Before any weights load: coremltools is importable and can convert (numpy < 2.4 with
   coremltools 9.0), the adapter dir is usable, ``--out`` is empty or absent (``--overwrite true``
   replaces one airoad wrote), not an input, not inside or around one.
2. The base loads in float32 and the adapter is merged in (:mod:`airoad.core.model.merging`).
3. Per context length: the model is wrapped with its KV cache as two buffers and traced
   (:mod:`airoad.export.coreml_wrapper`); the trace, cache and all, is checked against the merged
   model (chunked prefill, then one token per call) on the check chats; argmax agreement below
   ``--min_argmax_agreement``: exit 1, nothing written. Then it is converted to an ML program with
   the cache as state and its weights compressed (:mod:`airoad.export.coreml_pack`).
4. The functions are joined into ``NAME.mlpackage`` (weights stored once), whose spec is read back
   and compared with the promise (inputs, output, states, state writes per layer).
5. ``tokenizer/`` (for swift-transformers) and ``export_info.json`` join it; the staging dir is
   renamed to ``--out``. Running the package needs macOS 15 / iOS 18: it is not run here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airoad.core.base.commands import Invocation
from airoad.core.base.errors import CheckFailed, UserError
from airoad.core.base.io import write_json
from airoad.core.base.outputs import staged_dir
from airoad.core.model.adapter_source import Source, resolve_source
from airoad.core.model.merging import load_merged
from airoad.export import coreml_pack
from airoad.export.common import INFO, chat_ids, compare_logits, system_line
from airoad.export.coreml_pack import function_name, require_coremltools
from airoad.export.schema import CoremlConfig

TOKENIZER_DIR = "tokenizer"
ARCHITECTURES = ("qwen2", "qwen3", "llama")  # plain causal decoders: every layer one full-attention cache
RUNS_ON = "iOS 18 / macOS 15 or later (Core ML runs on Apple platforms only; not run here)"


def check_model(model: Any, contexts: list[int]) -> None:
    """UserError when the architecture is not one the wrapper handles or a context is too long."""
    config = model.config
    if config.model_type not in ARCHITECTURES:
        raise UserError(
            f"--base_model: model_type {config.model_type!r} is not supported by the Core ML export "
            f"({', '.join(ARCHITECTURES)}); export GGUF instead or merge onto a supported base"
        )
    limit = getattr(config, "max_position_embeddings", None)
    if limit and max(contexts) > limit:
        raise UserError(
            f"--context {max(contexts)}: above the model's max_position_embeddings {limit}; give <= {limit}"
        )


def prompt_wrapper(tokenizer: Any, system: str | None) -> str:
    """The chat template's rendering of one user turn (system first if set) with ``{system}`` /
    ``{user}`` where the texts go, ending with the open assistant turn."""
    user, sys_text = "\x00USER\x00", "\x00SYSTEM\x00"
    head = [{"role": "system", "content": sys_text}] if system else []
    rendered = tokenizer.apply_chat_template(
        head + [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    return (
        rendered.replace("{", "{{").replace("}", "}}").replace(sys_text, "{system}").replace(user, "{user}")
    )


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end an answer: the generation config's eos, <|im_end|> and <|endoftext|>."""
    eos = model.generation_config.eos_token_id if model.generation_config else None
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    for token in ("<|im_end|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.append(tid)
    return sorted(set(ids))


def build_functions(model: Any, ids: list[Any], cfg: CoremlConfig, scratch: Path, printer: Callable) -> tuple:
    """({context: single-function package path}, {context: parity dict}, {context: cache shape})."""
    from airoad.export import coreml_pack, coreml_wrapper

    parts, checks, shapes = {}, {}, {}
    for context in cfg.context_lengths:
        traced = coreml_wrapper.trace(model, context)
        check = coreml_wrapper.parity(traced, model, ids)
        checks[context] = check
        printer(parity_line(context, check, cfg.min_argmax_agreement))
        if not check["argmax_agreement"] >= cfg.min_argmax_agreement:
            raise CheckFailed(
                f"check failed: the traced model with its cache agrees with the tuned model's argmax on "
                f"{check['argmax_agreement']:.1%} of {check['positions']} positions < --min_argmax_agreement "
                f"{cfg.min_argmax_agreement:g}; nothing written"
            )
        shapes[context] = coreml_wrapper.cache_shape(model.config, context)
        mlmodel = coreml_pack.compress(coreml_pack.convert(traced, context, shapes[context]), cfg.quant)
        parts[context] = scratch / f"{coreml_pack.function_name(context)}.mlpackage"
        mlmodel.save(str(parts[context]))
        del traced, mlmodel
    return parts, checks, shapes


def check_compression(model: Any, ids: list[Any], cfg: CoremlConfig, printer: Callable) -> dict | None:
    """For int8/int4: the tuned model against a copy with its weights rounded as coremltools will
    round them (:func:`~airoad.export.coreml_wrapper.fake_quantize_`); CheckFailed below
    ``--min_argmax_agreement``. None for fp16."""

    from airoad.export import coreml_wrapper

    if cfg.quant == "fp16":
        return None
    rounded = coreml_wrapper.fake_quantize_(copy.deepcopy(model), cfg.quant)
    check = compare_logits(model, rounded, ids, "cpu")
    del rounded
    printer(
        f"{cfg.quant} weights (coremltools' rounding, simulated in torch): on {check['chats']} chats "
        f"({check['positions']} positions) max |dlogit| {check['max_abs_dlogit']:.3g}, argmax agreement "
        f"{check['argmax_agreement']:.1%} >= {cfg.min_argmax_agreement:g}"
    )
    if not check["argmax_agreement"] >= cfg.min_argmax_agreement:
        raise CheckFailed(
            f"check failed: {cfg.quant} weights move the next-token argmax on {1 - check['argmax_agreement']:.1%} "
            f"of {check['positions']} positions (agreement < --min_argmax_agreement {cfg.min_argmax_agreement:g}); "
            "use a wider --quant or lower the threshold; nothing written"
        )
    return check


def parity_line(context: int, check: dict[str, Any], threshold: float) -> str:
    return (
        f"ctx {context}: traced with its cache, {check['positions']} positions of {check['chats']} chats "
        f"(chunked prefill + decode): max |dlogit| {check['max_abs_dlogit']:.3g} (logits up to "
        f"{check['max_abs_logit']:.3g}), argmax agreement {check['argmax_agreement']:.1%} >= {threshold:g}"
    )


def save_tokenizer(tokenizer: Any, directory: Path) -> None:
    """The tokenizer files, with the chat template also inside tokenizer_config.json (where
    swift-transformers reads it; transformers 5 writes it to chat_template.jinja instead)."""

    tokenizer.save_pretrained(directory)
    config_path, jinja = directory / "tokenizer_config.json", directory / "chat_template.jinja"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "chat_template" not in config and tokenizer.chat_template:
        config["chat_template"] = tokenizer.chat_template
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    if jinja.exists() and not jinja.read_text(encoding="utf-8").strip():
        jinja.unlink()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(cfg: CoremlConfig, inv: Invocation) -> None:
    """`airoad export coreml` as the core runs it (inputs resolved, ``--out`` checked and held)."""

    require_coremltools()
    export(cfg, inv.printer, inv.source)


def export(cfg: CoremlConfig, printer: Callable[[str], None] = print, source: Source | None = None) -> Path:
    """Run the export (module docstring) of ``source`` (the CLI's runner resolved it and checked
    ``--out``; a Python caller without one gets ``cfg``'s resolved here); returns ``--out``."""
    source = source or resolve_source(cfg.base_model, cfg.adapters)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # our lines report the checks; the trace repeats config notes
    out = Path(cfg.out).expanduser()
    for note in source.notes:
        printer(note)
    what = f"{source.base} + {source.adapters} ({source.adapter_kind})" if source.adapters else source.base
    contexts = cfg.context_lengths
    printer(f"export coreml: {what}, merged in float32, weights {cfg.quant}, context {contexts}")
    model, tokenizer = load_merged(source, "cpu")
    check_model(model, contexts)
    system = system_line(cfg, source, tokenizer)
    with staged_dir(out, "export", "airoad export coreml") as (stage, scratch):
        ids = chat_ids(tokenizer, system)
        quant_check = check_compression(model, ids, cfg, printer)
        parts, checks, shapes = build_functions(model, ids, cfg, scratch, printer)
        package = stage / f"{cfg.name}.mlpackage"
        meta = metadata(cfg, source, model, tokenizer, system)
        coreml_pack.save_package(parts, package, meta, scratch)
        spec = coreml_pack.read_spec(package)
        if problems := coreml_pack.spec_problems(spec, shapes, model.config.num_hidden_layers):
            raise CheckFailed(
                "check failed: the package's spec is not what was promised: " + "; ".join(problems)
            )
        size = dir_size(package)
        printer(spec_line(package.name, spec, size))
        save_tokenizer(tokenizer, stage / TOKENIZER_DIR)
        info = export_info(cfg, source, meta, checks, spec, size)
        info["compression_check"] = quant_check
        write_outputs(stage, info)
    printer(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    printer(f"runs on {RUNS_ON}; a Swift loader: examples/swift (computeUnits .all, functionName ctx_N)")
    return out


def metadata(
    cfg: CoremlConfig, source: Any, model: Any, tokenizer: Any, system: str | None
) -> dict[str, str]:
    """The package's user-defined metadata (strings): what a loader needs to prompt and stop."""

    return {
        "airoad.description": f"{source.base} tuned with airoad ({source.adapter_kind or 'merged'}), {cfg.quant}",
        "airoad.prompt_wrapper": prompt_wrapper(tokenizer, system),
        "airoad.system_prompt": system or "",
        "airoad.eos_token_ids": ",".join(str(i) for i in stop_ids(model, tokenizer)),
        "airoad.context_lengths": ",".join(str(c) for c in cfg.context_lengths),
        "airoad.functions": ",".join(function_name(c) for c in cfg.context_lengths),
        "airoad.quant": cfg.quant,
        "airoad.inputs": "inputIds int32 [1,q]; causalMask float32 [1,1,q,end] additive, end = cached + q",
        "airoad.outputs": "logits float32 [1,1,vocab]: next token after the last input token",
        "airoad.tokenizer": TOKENIZER_DIR,
    }


def spec_line(name: str, spec: dict[str, Any], size: int) -> str:
    funcs = ", ".join(spec["functions"])
    return (
        f"verified spec of {name} ({size / 2**20:.1f} MiB): functions {funcs} (default {spec['default_function']}), "
        f"each inputIds + causalMask -> logits with states keyCache, valueCache"
    )


def export_info(
    cfg: CoremlConfig, source: Any, meta: dict, checks: dict, spec: dict, size: int
) -> dict[str, Any]:
    from airoad.core.run.artifacts import library_versions

    return {
        "base": source.base,
        "adapters": str(source.adapters) if source.adapters else None,
        "adapter": source.adapter_kind or None,
        "quant": cfg.quant,
        "package": f"{cfg.name}.mlpackage",
        "package_size": size,
        "context_lengths": cfg.context_lengths,
        "metadata": meta,
        "parity": {str(c): v for c, v in checks.items()},
        "spec": spec,
        "runs_on": RUNS_ON,
        "versions": library_versions(extra=("coremltools", "numpy")),
    }


def write_outputs(stage: Path, info: dict[str, Any]) -> None:

    write_json(stage / INFO, info)
