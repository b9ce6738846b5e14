"""A Qwen2 causal LM (plain transformers weights, float32, in memory) written as one GGUF file with
gguf-py's ``GGUFWriter``, the way llama.cpp's ``convert_hf_to_gguf.py`` writes a Qwen2 checkpoint
(``Qwen2Model``: ``TextModel.set_gguf_parameters``, ``_set_vocab_gpt2``, ``prepare_tensors``).
Each rule below names the converter behaviour it follows; no converter code is used.

- Metadata: ``general.architecture = qwen2`` (the writer's ``arch``), ``general.type = model``,
  ``general.name``, then ``qwen2.*``: context length (``max_position_embeddings``), embedding
  length, block count, feed-forward length, head counts, rope freq base (``rope_theta``), RMS eps,
  ``general.file_type`` (``LlamaFileType``), ``general.quantization_version``.
- Vocabulary (``TextModel.get_vocab_base``): one entry per embedding row, ``n_vocab =
  config.vocab_size``; ids the tokenizer lacks become ``[PAD{i}]`` of type UNUSED; added tokens
  are CONTROL when special or when they look special (``<|...|>``, ``does_token_look_special``),
  else USER_DEFINED; all others NORMAL. ``tokenizer.ggml.model = gpt2``; ``tokenizer.ggml.pre``
  names the pre-tokenizer (llama.cpp fingerprints it by hashing the ids of a probe text, Qwen2's
  maps to ``qwen2``; here the pre-tokenizer's split regex is compared with Qwen2's, the one
  llama.cpp's ``LLAMA_VOCAB_PRE_TYPE_QWEN2`` runs). Merges, bos/eos/pad ids and the chat template
  come from ``gguf.SpecialVocab`` (gguf-py's own reader of tokenizer.json, tokenizer_config.json,
  chat_template.jinja and config.json, as the converter calls it).
- Tensors: HF names through ``gguf.get_tensor_name_map(MODEL_ARCH.QWEN2, n_blocks)``; 1-D tensors,
  ``*_norm.weight`` and every non-``.weight`` tensor (the q/k/v biases) in F32; the rest in the
  requested type through ``gguf.quants.quantize``, a tensor whose rows Q8_0 blocks cannot tile
  falling back to F16 (``QuantError``). A tied head writes no ``output.weight`` (llama.cpp then
  uses ``token_embd.weight``, and transformers' GGUF reader sets ``tie_word_embeddings``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from airoad.core.base.errors import UserError
from airoad.core.model.merging import tied

# Qwen2's pre-tokenizer split (tokenizer.json ``pre_tokenizer``), also llama.cpp's QWEN2 regex
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FILE_TYPES = {"f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}  # gguf.LlamaFileType
TENSOR_TYPES = {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}  # gguf.GGMLQuantizationType


class ExportError(UserError):
    """A model or tokenizer this exporter cannot write (one line each)."""


def check_qwen2(config: Any) -> None:
    """ExportError unless ``config`` is a plain Qwen2 (the one architecture written here)."""
    if getattr(config, "model_type", None) != "qwen2":
        raise ExportError(
            f"model type {getattr(config, 'model_type', None)!r}: only Qwen2-family models (Qwen2, Qwen2.5) "
            "are exported to GGUF so far; export a Qwen2.5 tune, or use llama.cpp's convert_hf_to_gguf.py "
            "on an `airoad merge` checkpoint"
        )
    scaling = getattr(config, "rope_scaling", None) or {}
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise ExportError(f"rope scaling {scaling}: not written by this exporter; export without it")


def rope_theta(config: Any) -> float:
    """``rope_theta`` of a transformers 4 (attribute) or 5 (``rope_parameters``) config."""
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta if theta is not None else getattr(config, "rope_theta", 10000.0))


def add_architecture(writer: Any, config: Any, quant: str, name: str) -> None:
    """The ``general.*`` and ``qwen2.*`` keys of ``TextModel.set_gguf_parameters``."""
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = getattr(config, "head_dim", None)
    if head_dim and head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(gguf.LlamaFileType[FILE_TYPES[quant]])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def looks_special(text: str) -> bool:
    """llama.cpp's ``does_token_look_special``: added tokens spelled like control tokens."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def vocab_entries(tokenizer: Any, n_vocab: int) -> tuple[list[str], list[int]]:
    """(tokens, token types), ``n_vocab`` of each (the embedding rows), per ``get_vocab_base``.

    A vocab entry spelled ``[PAD{i}]`` at its own id i that is no added token counts as padding
    too: a tokenizer rebuilt from a GGUF carries llama.cpp's placeholders in its BPE vocab."""
    import gguf

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    if reverse and max(reverse) >= n_vocab:
        raise ExportError(
            f"the tokenizer has ids up to {max(reverse)} but the model only {n_vocab} embedding rows; "
            "export with the tokenizer the run trained with"
        )
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(n_vocab):
        token = reverse.get(i)
        if token is None or (token == f"[PAD{i}]" and i not in added):
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        if i in added:
            if not added[i].normalized:  # llama.cpp expects added tokens pre-normalized
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if added[i].special or looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")  # pre-normalised user-defined spaces
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, [int(t) for t in types]


def pre_tokenizer(tokenizer_json: Path) -> str:
    """``tokenizer.ggml.pre`` for a saved tokenizer.json: ``qwen2``, or ExportError."""
    pre = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    splits = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    if splits == [QWEN2_SPLIT] and any(s.get("type") == "ByteLevel" for s in steps):
        return "qwen2"
    raise ExportError(
        "the tokenizer's pre-tokenizer is not Qwen2's, so llama.cpp would split text differently from "
        "training; export with the Qwen2 tokenizer the run trained with"
    )


def add_tokenizer(writer: Any, tokenizer: Any, config: Any, scratch: Path) -> dict[str, Any]:
    """Vocabulary, merges, special ids and chat template (``_set_vocab_gpt2``); ``scratch`` is an
    empty dir for the tokenizer files gguf.SpecialVocab reads. Returns a summary for messages."""
    import gguf

    tokenizer.save_pretrained(scratch)
    config.to_json_file(scratch / "config.json")  # the converter's SpecialVocab also reads config.json
    n_vocab = config.vocab_size
    tokens, types = vocab_entries(tokenizer, n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(scratch / "tokenizer.json"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(scratch, load_merges=True, n_vocab=n_vocab)
    if not special.merges:
        raise ExportError("the tokenizer has no BPE merges; export with the run's Qwen2 tokenizer")
    special.add_to_gguf(writer, quiet=True)
    return {
        "n_vocab": n_vocab,
        "padding": sum(t == gguf.TokenType.UNUSED for t in types),
        "merges": len(special.merges),
        "special_ids": dict(special.special_token_ids),
        "chat_template": special.chat_template is not None,
    }


def tensor_type(hf_name: str, gguf_name: str, ndim: int, quant: str) -> Any:
    """The GGMLQuantizationType ``prepare_tensors`` picks for one tensor."""
    import gguf

    if ndim <= 1 or gguf_name.endswith("_norm.weight") or not hf_name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32
    return gguf.GGMLQuantizationType[TENSOR_TYPES[quant]]


def add_tensors(writer: Any, model: Any, quant: str, tied_head: bool) -> dict[str, int]:
    """Every weight of ``model`` (float32 Qwen2ForCausalLM) under its GGUF name, typed by
    :func:`tensor_type`; ``lm_head`` skipped when ``tied_head``. Returns {type name: count}."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, model.config.num_hidden_layers)
    counts: Counter[str] = Counter()
    for hf_name, tensor in model.state_dict().items():
        if tied_head and hf_name == "lm_head.weight":
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"tensor {hf_name}: no GGUF name for it in llama.cpp's Qwen2 layout")
        data = tensor.detach().to("cpu").float().numpy()
        qtype = tensor_type(hf_name, gguf_name, data.ndim, quant)
        try:
            packed = gguf.quants.quantize(data, qtype)
        except gguf.QuantError:  # rows not a multiple of the block size: the converter's F16 fallback
            qtype = gguf.GGMLQuantizationType.F16
            packed = gguf.quants.quantize(data, qtype)
        writer.add_tensor(gguf_name, packed, raw_dtype=qtype)
        counts[qtype.name] += 1
    return dict(counts)


def write_gguf(model: Any, tokenizer: Any, path: Path, quant: str, scratch: Path) -> dict[str, Any]:
    """Write ``model`` (float32 Qwen2, adapters already merged) and ``tokenizer`` to ``path`` as
    GGUF of weight type ``quant`` (f16 | bf16 | q8_0). Returns what was written (for export_info)."""
    import gguf

    check_qwen2(model.config)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN2])
    add_architecture(writer, model.config, quant, path.stem)
    vocab = add_tokenizer(writer, tokenizer, model.config, scratch)
    tied_head = tied(model)
    counts = add_tensors(writer, model, quant, tied_head)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensor_types": counts, "tied_head": tied_head, "vocab": vocab}
