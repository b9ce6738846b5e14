"""A written GGUF run through llama.cpp itself (``llama-cpp-python``, when importable): the prompt
tokenised by llama.cpp from the GGUF's own vocabulary, then a greedy generation compared token
by token with transformers' greedy generation on the tuned model.

Greedy on both sides is argmax of the logits after each token (llama.cpp's ``scores`` after
``eval``), so any difference is the file's (weights, vocabulary, architecture metadata), not
sampling's. A quantized file may legitimately flip a near-tie and diverge from there: the result
is reported (tokens equal before the first difference), not a failure.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path
from typing import Any


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def hf_greedy(model: Any, ids: list[int], new_tokens: int, stops: set[int]) -> list[int]:
    """transformers' greedy continuation of ``ids`` (at most ``new_tokens``, ending at a stop id)."""
    import torch

    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids], device=model.device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=sorted(stops),
            pad_token_id=sorted(stops)[0],
        )
    return out[0, len(ids) :].tolist()


def llama_greedy(llm: Any, ids: list[int], new_tokens: int, stops: set[int]) -> list[int]:
    """llama.cpp's greedy continuation: argmax of its logits after each evaluated token."""
    import numpy as np

    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    for _ in range(new_tokens):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        if nxt in stops:
            break
        llm.eval([nxt])
    return out


def open_gguf(path: Path, n_ctx: int) -> Any:
    """llama.cpp's model of ``path`` on the CPU, its log lines off."""
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, n_gpu_layers=0, logits_all=True, verbose=False, seed=0)


def compare(
    path: Path, model: Any, tokenizer: Any, prompts: list[str], new_tokens: int = 32
) -> dict[str, Any]:
    """Per prompt (text with special tokens, e.g. a rendered chat turn): whether llama.cpp tokenises
    it as transformers does, and how many greedy tokens agree before the first difference."""
    stops = {
        t
        for t in (tokenizer.convert_tokens_to_ids(s) for s in ("<|im_end|>", "<|endoftext|>"))
        if isinstance(t, int)
    }
    rows = []
    hf_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    llm = open_gguf(path, n_ctx=max(len(i) for i in hf_ids) + new_tokens + 8)
    for text, ids in zip(prompts, hf_ids, strict=True):
        lc_ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        want = hf_greedy(model, ids, new_tokens, stops)
        got = llama_greedy(llm, ids, new_tokens, stops)
        same = next(
            (i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got))
        )
        rows.append({"tokenizer_equal": lc_ids == ids, "hf_tokens": len(want), "llama_tokens": len(got),
                     "identical_prefix": same, "identical": want == got})  # fmt: skip
    llm.close()
    return {
        "prompts": len(rows),
        "tokenizer_equal": all(r["tokenizer_equal"] for r in rows),
        "identical": sum(r["identical"] for r in rows),
        "rows": rows,
        "llama_cpp_python": _version(),
    }


def _version() -> str:

    return md.version("llama-cpp-python")


def line(result: dict[str, Any]) -> str:
    """One line for the export's output."""
    agree = ", ".join(f"{r['identical_prefix']}/{r['hf_tokens']}" for r in result["rows"])
    tok = (
        "tokenises the prompts as transformers does" if result["tokenizer_equal"] else "TOKENISES DIFFERENTLY"
    )
    return (
        f"llama.cpp (llama-cpp-python {result['llama_cpp_python']}): {tok}; greedy generation identical to "
        f"transformers' on {result['identical']} of {result['prompts']} prompts (tokens equal before the "
        f"first difference: {agree})"
    )
