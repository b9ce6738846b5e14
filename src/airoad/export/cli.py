"""`airoad export <target> ...`: a tune written for another runtime; each target's module is imported
only when it runs.

airoad export gguf --adapters outputs/qwen05b_fast_plain --out exports/fast_plain_gguf --quant q8_0
airoad export coreml --adapters outputs/qwen05b_fast_plain --out exports/fast_plain_coreml --context 2048,4096
"""

from __future__ import annotations

# name -> (module with main(argv) -> int, one-line help)
TARGETS: dict[str, tuple[str, str]] = {
    "gguf": (
        "airoad.export.gguf_run",
        "one GGUF file (f16, bf16, q8_0) + Ollama Modelfile, read back and checked against the tune",
    ),
    "coreml": (
        "airoad.export.coreml_run",
        "one stateful Core ML package (a function per context length), trace checked, spec read back",
    ),
}


def main(argv: list[str]) -> int:
    """Entry point of `airoad export`; returns the exit status (2 with `error:` lines for user mistakes)."""
    from airoad.core.base.commands import dispatch

    return dispatch(TARGETS, argv, "airoad export", "target", what="export target")
