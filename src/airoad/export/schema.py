"""Options of the export targets: :class:`ExportKeys`, declared once, and each target's own (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from airoad.core.base.options import ADAPTERS_HELP, BASE_HELP, closest, opt, overwrite_opt
from airoad.core.base.runkeys import DEVICES
from airoad.core.base.textargs import file_name_problems

QUANTS = ("f16", "bf16", "q8_0")  # what gguf-py itself writes (gguf.quants): no llama.cpp needed
# llama.cpp's own quantizer (llama-quantize) makes these; gguf-py has no quantizer for them
LLAMA_CPP_QUANTS = (
    "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
    "q5_k_s", "q5_k_m", "q6_k", "iq2_xxs", "iq2_xs", "iq3_xxs", "iq3_s", "iq4_nl", "iq4_xs", "tq1_0", "tq2_0",
)  # fmt: skip


@dataclass
class ExportKeys:
    """The keys every export target takes, declared once; a target adds its own."""

    adapters: str | None = opt(
        None,
        ADAPTERS_HELP + " LoRA or DoRA, merged into its base in memory. Omit it to export a merged "
        "checkpoint given as --base_model.",
        io="adapters",
    )
    base_model: str | None = opt(
        None,
        BASE_HELP + " Alone: the (merged) checkpoint to export.",
        io="base",
    )
    out: str | None = opt(
        None,
        "Directory to write (the export and export_info.json).",
        io="out_dir",
        required="the directory to write the export into",
    )
    name: str = opt("model", "File name stem of the export (e.g. model -> model-q8_0.gguf, model.mlpackage).")
    overwrite: bool = overwrite_opt()
    min_argmax_agreement: float = opt(
        0.9,
        "Refuse to write when the exported model's next-token argmax agrees with the tuned model's on fewer "
        "than this fraction of the checked positions.",
        min=0,
        max=1,
    )

    def validate(self) -> list[str]:
        problems = []
        if not self.adapters and not self.base_model:
            problems.append("give --adapters (a run's output_dir) or --base_model (a merged checkpoint)")
        return problems + file_name_problems("--name", self.name, NAME_SUFFIX)


NAME_SUFFIX = "-q8_0.gguf.tmp"  # the longest suffix an export appends to --name


@dataclass
class GgufConfig(ExportKeys):
    quant: str = opt(
        "q8_0",
        "Weight type of the 2-D tensors: f16, bf16 or q8_0 (norms, biases and other 1-D tensors stay "
        "float32, as llama.cpp's converter writes them). K-quants (q4_k_m, ...) need llama.cpp's quantizer.",
    )
    system_prompt: str | None = opt(
        None,
        'SYSTEM line of the Ollama Modelfile; default: the run\'s system_prompt; "" = the chat '
        "template's default system turn (written out, so Ollama uses it too).",
    )
    device: str = opt(
        "cpu",
        "Where the merge and the check run. cpu by default, unlike the generating commands' auto: a "
        "0.5B model merges and checks in seconds to a minute there, leaving the GPU free (cpu needs ~8 bytes x params "
        "of RAM: the tuned and the read-back model).",
        choices=DEVICES,
    )

    def validate(self) -> list[str]:
        return super().validate() + quant_problems(self.quant)


def quant_problems(quant: str) -> list[str]:
    """[] for a quant gguf-py writes, else one line: K-quants point to llama.cpp, others to the list."""
    q = quant.lower()
    if q in QUANTS:
        return []
    if q in LLAMA_CPP_QUANTS:
        return [
            f"--quant {quant}: needs llama.cpp's quantizer, which airoad does not ship; export --quant f16 "
            "and run llama.cpp's llama-quantize on it (pip install llama-cpp-python brings the library), "
            "or use --quant q8_0"
        ]
    hint = closest(q, list(QUANTS))
    fix = f"did you mean {hint}?" if hint else f"choose one of {', '.join(QUANTS)}"
    return [f"--quant {quant}: unknown weight type; {fix}"]


COREML_QUANTS = ("fp16", "int8", "int4")
MIN_CONTEXT = 16


@dataclass
class CoremlConfig(ExportKeys):
    context: list[str] = opt(
        ["2048", "4096"],
        "Context lengths (tokens: prompt + answer), comma- or space-separated: one function of the "
        "package each (ctx_2048, ...), the weights stored once; each allocates only its own KV cache.",
        metavar="N[,N]",
    )
    quant: str = opt(
        "fp16",
        "Weights: fp16, int8 (per-channel linear) or int4 (per-block of 32, linear; iOS 18 / macOS 15), "
        "through coremltools.optimize. Compute is fp16 either way.",
        choices=COREML_QUANTS,
    )
    system_prompt: str | None = opt(
        None,
        "System prompt in the package's prompt wrapper; default: the run's system_prompt; \"\" = the "
        "chat template's default.",
    )

    @property
    def context_lengths(self) -> list[int]:
        """--context as sorted unique ints (validate() has checked them)."""
        return sorted({int(p) for p in _context_parts(self.context) if p.isascii() and p.isdigit()})

    def validate(self) -> list[str]:
        return super().validate() + context_problems(self.context)


def _context_parts(values: list[str]) -> list[str]:
    return [p.strip() for v in values for p in str(v).split(",") if p.strip()]


def context_problems(values: list[str]) -> list[str]:
    """One line per --context entry that is not a whole number of tokens >= MIN_CONTEXT."""
    parts = _context_parts(values)
    if not parts:
        return ["--context: give at least one length, e.g. --context 2048,4096"]
    bad = [p for p in parts if not (p.isascii() and p.isdigit()) or int(p) < MIN_CONTEXT]
    return [
        f"--context {p}: not a context length; give whole numbers of tokens >= {MIN_CONTEXT}, e.g. 2048,4096"
        for p in bad
    ]


MLX_QUANTS = ("none", "4bit", "8bit")


@dataclass
class MlxConfig(ExportKeys):
    fuse: bool = opt(
        False,
        "Write the merged model as an MLX model directory (runs with no adapter and no PyTorch) instead "
        "of an mlx-lm adapter folder for the base.",
    )
    quant: str = opt(
        "none",
        "With --fuse: mlx-lm's own quantization of the fused model (group size 64).",
        choices=MLX_QUANTS,
    )
    system_prompt: str | None = opt(
        None,
        "System turn of the check chats and of the printed mlx_lm commands; default: the run's system_prompt; "
        '"" = the chat template default.',
    )
    max_relative_dlogit: float = opt(
        0.25,
        "Refuse to write when max |logit difference| of mlx-lm and the tuned PyTorch model exceeds this "
        "fraction of the adapter's own effect (max |tuned - base|): a wrong conversion moves logits by "
        "about the adapter's effect, rounding by a few percent.",
        gt=0,
    )
    greedy_tokens: int = opt(
        16, "Greedy tokens generated by both models per check prompt (reported).", min=1, max=256
    )

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.quant != "none" and not self.fuse:
            problems.append(
                f"--quant {self.quant} quantizes the fused model: add --fuse true (an adapter uses the base as it is)"
            )
        if not self.adapters:
            problems.append("give --adapters (a run's output_dir): export mlx converts an adapter")
        return problems
