"""`airoad <command> ...`: each command's module is imported only when it runs.

    airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml
    airoad env

`airoad --help` imports no torch. User mistakes exit 2 with one line per problem, no traceback.
"""

from __future__ import annotations

import sys

from airoad.core.base.commands import dispatch

# name -> (module with main(argv) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("airoad.sft.run", "fine-tune a chat model with LoRA/DoRA (+KL) from a YAML config"),
    "pref": ("airoad.pref.run", "preference-train an adapter (DPO, ORPO, KTO) from a YAML config"),
    "env": ("airoad.env_cmd", "print library versions, devices and the device/dtype a run would use"),
    "data": ("airoad.data_tools.cli", "data tools: stats, markdown-slice, neg-guard, mix, pairs"),
    "export": ("airoad.export.cli", "export a tune: gguf (llama.cpp/Ollama), coreml (iOS 18 / macOS 15)"),
    "merge": ("airoad.infer.merge", "merge an adapter into its base: a plain HF checkpoint"),
    "compare": ("airoad.infer.compare", "side-by-side answers of base and tuned model"),
    "eval": (
        "airoad.infer.style_eval",
        "style scores (lists, headings, banned tokens, drift) of base vs tuned",
    ),
    "probe": (
        "airoad.probe.run",
        "train, then compare + style eval (base vs tuned, drift); one probe_report.md to decide from",
    ),
}


def version() -> str:
    """The installed distribution's version (the source tree's when run uninstalled)."""
    import importlib.metadata as md

    try:
        return md.version("airoad")
    except md.PackageNotFoundError:
        from airoad import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):
        print(f"airoad {version()}")
        return 0
    return dispatch(COMMANDS, argv, "airoad", "command")


if __name__ == "__main__":
    sys.exit(main())
