"""Shared fixtures: a tiny random Qwen2 model with the real Qwen2.5 tokenizer (from ../shared, or
the folder AIROAD_TEST_TOKENIZER names).

Tests that need the tokenizer fixture skip cleanly when it is absent.

``--device cuda`` (or AIROAD_TEST_DEVICE=cuda; default cpu) runs the kernel and loss tests that
take the ``device`` fixture on the GPU (bench/gpu_check.py does); tests that train through
``airoad train`` pick the device themselves (``device: auto``: the GPU where there is one).
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def _bf16_units() -> bool:
    from airoad.core.model.devices import cpu_bf16_units

    return cpu_bf16_units()


DEVICES = ("cpu", "cuda")
TEST_DEVICE = os.environ.get("AIROAD_TEST_DEVICE", "cpu")  # pytest_configure sets it from --device


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default=os.environ.get("AIROAD_TEST_DEVICE", "cpu"),
        choices=DEVICES,
        help="where the kernel and loss tests (the `device` fixture) run; default cpu, or AIROAD_TEST_DEVICE",
    )


def pytest_configure(config):
    global TEST_DEVICE
    TEST_DEVICE = config.getoption("--device")
    config.addinivalue_line("markers", "needs_bf16: runs only where bf16 arithmetic is native")
    if TEST_DEVICE == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError("--device cuda: no CUDA GPU is visible to torch")


def bf16_native() -> bool:
    """bf16 arithmetic in hardware where the tests run: a CUDA GPU with bf16, or a CPU with bf16 units."""
    if TEST_DEVICE == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    return _bf16_units()


# The files that take longest, longest first (`pytest --durations=0`, summed per file, 2 cores):
# pytest-xdist hands whole files to its workers as they free up (`--dist loadfile
# --no-loadscope-reorder` in pyproject.toml), so a long file handed out last would leave the other
# core idle at the end. The rest keep their collection order. A stale list costs time, not tests.
LONGEST_FIRST = (
    "export/test_gguf.py",
    "export/test_mlx.py",
    "pref/test_pref.py",
    "infer/test_merge_compare_eval.py",
    "export/test_coreml.py",
    "core/run/test_resume_and_signals.py",
    "test_bench.py",
    "test_readme.py",
    "infer/test_serve.py",
    "sft/test_kl_anchor.py",
    "sft/test_train.py",
    "infer/test_chat.py",
    "core/run/test_ddp.py",
    "sft/test_packing_and_teacher_cache.py",
    "core/run/test_fsdp.py",
    "core/base/test_outputs.py",
    "probe/test_probe.py",
)


def pytest_collection_finish(session):
    # Every test module is imported now, torch, transformers and peft with them: ~1M long-lived
    # objects that each gc.collect() would walk again (0.2 s a call; accelerate calls it in every
    # Trainer.train, ~100 times a session). Frozen, the collector skips them; what tests create
    # later is collected as usual.
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    tests = Path(__file__).parent

    def file_rank(item) -> int:
        return rank.get(Path(item.fspath).relative_to(tests).as_posix(), len(rank))

    items.sort(key=file_rank)  # stable: each file keeps its own order


def pytest_runtest_setup(item):
    if item.get_closest_marker("needs_bf16") and not bf16_native():
        pytest.skip("this CPU has no bf16 units (avx512_bf16 / amx_bf16): no run trains in bf16 here")


@pytest.fixture(scope="session")
def device() -> str:
    """ "cpu" or "cuda" (``--device``): where the kernel and loss tests put their tensors."""
    return TEST_DEVICE


# The bf16 path's own tests: they run where bf16 is native (a CPU with bf16 units, a CUDA GPU with
# --device cuda); elsewhere bf16 matmuls are emulated, hundreds of times slower, and no run picks
# bf16 by default.
needs_bf16 = pytest.mark.needs_bf16
# Compared against fp32 references: pin the precision, whatever `dtype: auto` picks on this CPU.
FP32 = ("--dtype", "float32")
BF16 = ("--dtype", "bfloat16")
SHARED = REPO.parent / "shared"
TOKENIZER_DIR = Path(os.environ.get("AIROAD_TEST_TOKENIZER") or SHARED / "fixtures" / "qwen2.5-tokenizer")


def train_args(model_dir, data, out, *extra: str) -> list[str]:
    """`airoad train` argv for a model, a data file and an output dir (plus ``extra`` flags)."""
    return [
        "train",
        "--base_model",
        str(model_dir),
        "--dataset_path",
        str(data),
        "--output_dir",
        str(out),
        *extra,
    ]


def cfg_for(model_dir, data, out, *extra):
    """A short, fast TrainConfig for a model, a data file and an output dir (plus ``extra`` flags)."""
    from airoad.core.base.options import load_config
    from airoad.sft.schema import TrainConfig

    argv = [
        *train_args(model_dir, data, out)[1:],
        "--max_steps",
        "6",
        "--grad_accum",
        "2",
        "--learning_rate",
        "5e-3",
        "--print_every_steps",
        "2",
        "--warmup_ratio",
        "0",
        "--lr_scheduler",
        "constant",
        *extra,
    ]
    return load_config(TrainConfig, argv)[0]


def sharded_argv(model_dir, data, out) -> list[str]:
    """`airoad train` flags shared by a 2-process run and its 1-process twin (global batch 4 with
    the right --grad_accum): no dropout, fp32, 6 steps."""
    return [
        *train_args(model_dir, data, out)[1:],
        "--max_steps",
        "6",  # 2 epochs of 12 examples at a global batch of 4
        "--per_device_batch_size",
        "1",
        "--learning_rate",
        "5e-3",
        "--lora_dropout",
        "0",  # no per-rank dropout streams: the two runs must compute the same thing
        "--print_every_steps",
        "1",
        "--device",
        "cpu",
        *FP32,  # a comparison of sums: fp32 on every CPU, whatever `dtype: auto` picks here
    ]


def launch_env() -> dict[str, str]:
    """The environment of a 2-process launch (torchrun, accelerate launch) of this checkout."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # 2 ranks on a 2-core runner: no oversubscription
        "PYTHONPATH": str(REPO / "src"),
    }


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


@pytest.fixture(scope="session")
def qwen_tokenizer():
    if not TOKENIZER_DIR.is_dir():
        pytest.skip(f"{TOKENIZER_DIR} not present (../shared, or set AIROAD_TEST_TOKENIZER)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def build_tiny_qwen(out: Path, tokenizer, seed: int = 0, tie: bool = True) -> Path:
    """A 2-layer, hidden-32 Qwen2 with the real vocabulary, saved with the tokenizer to ``out``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=tie,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, qwen_tokenizer) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"), qwen_tokenizer)


CHAT_ROWS = [
    {
        "messages": [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "2 + 2 = 4."},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "7 is prime."},
            {"role": "user", "content": "Another?"},
            {"role": "assistant", "content": "11 is prime too."},
        ]
    },
    {"instruction": "Reverse the word.", "input": "stressed", "output": "desserts"},
    {
        "messages": [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi! Nice to meet you."},
        ]
    },
]


@pytest.fixture()
def chat_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", CHAT_ROWS * 3)


RUN_SYSTEM = "You are terse."
ADAPTER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter_run(
    base_dir: Path, out: Path, dora: bool, seed: int = 1, targets: list[str] = ADAPTER_TARGETS
) -> Path:
    """An airoad-like run dir: a LoRA/DoRA adapter on ``targets`` with random non-zero lora_B (so it
    moves the logits) saved by peft, and a run_config.yaml naming the base and the system prompt."""
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, use_dora=dora)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out, safe_serialization=True)
    (out / "run_config.yaml").write_text(
        yaml.safe_dump({"base_model": str(base_dir), "system_prompt": RUN_SYSTEM})
    )
    return out
