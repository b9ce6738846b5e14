"""The prepared GPU check: CUDA tests of the fast paths, then airoad vs TRL on Qwen2.5-0.5B's shape.

Here, once (downloads the wheels the GPU image lacks, packs the tokenizer; prints the run line):

    python bench/gpu_check.py --prepare

On the GPU machine (one H100; no network, no hub, no real weights), from the repository root:

    bash bench/gpu_check.sh                    # = python3 bench/gpu_check.py --out $OUT --device cuda

Dry run on a CPU, tiny shapes (what was run here before any GPU time was spent):

    python bench/gpu_check.py --device cpu --shape tiny --out /tmp/gpu-check

It writes to --out: report.md (every result and one line per thing it could not run, and why),
results.json, tests.log (pytest -v on --device), bench.log (every worker's output), env.json. Steps:
1. the test files of the fused LoRA/DoRA layers, lean layers, head loss, packing, KL, KL anchors
   and the teacher cache, with ``--device cuda`` (bf16 tests included: the GPU has bf16);
2. training speed and memory on Qwen2.5-0.5B's exact config with random weights built here
   (weights do not change speed): airoad LoRA, DoRA, LoRA + KL anchors, LoRA with Liger, QLoRA,
   against TRL SFTTrainer + PEFT in its defaults (bf16, gradient checkpointing on) and without
   checkpointing (the same work as airoad's default), same rows, batch and steps: tokens/s in the
   steady state (after --warmup steps) and peak torch.cuda.max_memory_allocated (peak RSS on CPU),
   each also as a ratio to the TRL runs. Each run is its own process (clean peaks).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen_shape import QWEN25_05B, build_random_model, tokenizer_dir, write_chat_data  # noqa: E402

CARRY = REPO / ".gpu"  # what travels with the tree to the GPU machine (git-ignored via .git/info/exclude)
TEST_GROUPS = (  # run one after the other, each within its share of --tests_timeout
    (
        "tests/core/kernels/test_fused_lora.py",
        "tests/core/kernels/test_lean_layers.py",
        "tests/core/kernels/test_head_loss.py",
    ),  # kernels, head loss
    (
        "tests/sft/test_packing_and_teacher_cache.py",
        "tests/sft/test_kl_anchor.py",
    ),  # packing, KL, anchors, teacher cache (runs)
)
TRL_VARIANTS = ("trl", "trl_nogc")
DPO_VARIANTS = ("dpo_trl", "dpo")  # preference pairs: TRL DPOTrainer + PEFT vs `airoad pref`, pairs/s
VARIANTS = (*TRL_VARIANTS, "lora", "dora", "lora_kl_anchor", "lora_liger", "qlora", *DPO_VARIANTS)
DPO = dict(batch=4, beta="0.1", lr="5e-5")
# The GPU image has torch, transformers, peft, accelerate, triton, pyarrow, pandas, xxhash, fsspec and
# pytest; these travel as wheels (pure Python but bitsandbytes, ~41 MiB, which QLoRA needs).
WHEELS = ("trl", "datasets", "dill", "multiprocess", "liger-kernel==0.8.5", "bitsandbytes==0.50.2")
TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
LORA = dict(r="16", alpha="32", dropout="0.05")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------- here: the carried files


def prepare(bnb: bool) -> None:
    """Wheels into .gpu/whl, the tokenizer into .gpu/tokenizer (tokenizer.json gzipped: 11 -> ~3 MB)."""
    exclude = REPO / ".git" / "info" / "exclude"
    if exclude.parent.is_dir() and "/.gpu/" not in (exclude.read_text() if exclude.is_file() else ""):
        with exclude.open("a") as f:
            f.write("/.gpu/\n")
    whl = CARRY / "whl"
    shutil.rmtree(whl, ignore_errors=True)
    whl.mkdir(parents=True)
    specs = [w if "==" in w else f"{w}=={md.version(w)}" for w in WHEELS if bnb or "bitsandbytes" not in w]
    plat = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    for n in ("2_28", "2_27", "2_24", "2_17"):
        plat += ["--platform", f"manylinux_{n}_x86_64"]
    plat += ["--platform", "manylinux2014_x86_64"]
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *plat, "-d", str(whl), *specs]
    subprocess.run(pip, check=True)
    tok = CARRY / "tokenizer"
    shutil.rmtree(tok, ignore_errors=True)
    tok.mkdir()
    src = tokenizer_dir()
    for f in src.iterdir():
        if f.name == "tokenizer.json":
            with f.open("rb") as i, gzip.open(tok / "tokenizer.json.gz", "wb") as o:
                shutil.copyfileobj(i, o)
        else:
            shutil.copy(f, tok / f.name)
    sizes = {p.relative_to(REPO).as_posix(): p.stat().st_size for p in CARRY.rglob("*") if p.is_file()}
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    )
    tree = sum((REPO / f).stat().st_size for f in tracked.stdout.split("\n") if f and (REPO / f).is_file())
    for name, size in sorted(sizes.items()):
        print(f"{size / 2**20:8.2f} MiB  {name}")
    total = (sum(sizes.values()) + tree) / 2**20
    print(f"{tree / 2**20:8.2f} MiB  working tree\n{total:8.2f} MiB  in all (the limit is 64 MiB)")
    print('run on the GPU machine with: carry [".gpu"], command: bash bench/gpu_check.sh')


def unpack_tokenizer(work: Path) -> None:
    """On the GPU machine: .gpu/tokenizer (gzipped) -> work/tokenizer, named by AIROAD_TEST_TOKENIZER."""
    packed = CARRY / "tokenizer"
    if os.environ.get("AIROAD_TEST_TOKENIZER") or not (packed / "tokenizer.json.gz").is_file():
        return
    tok = work / "tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    for f in packed.iterdir():
        if f.name.endswith(".gz"):
            with gzip.open(f, "rb") as i, (tok / f.name[:-3]).open("wb") as o:
                shutil.copyfileobj(i, o)
        else:
            shutil.copy(f, tok / f.name)
    os.environ["AIROAD_TEST_TOKENIZER"] = str(tok)


# ---------------------------------------------------------------- workers (one process per run)


def peak_memory(device: str) -> tuple[float, str]:
    import resource

    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak_rss"


def steady_rate(points: list[tuple[float, int]], warmup: int) -> float:
    """Tokens/s between the end of step ``warmup`` and the last step; ``points``: (elapsed s,
    cumulative non-pad tokens) at the end of each step."""
    w = min(warmup, len(points) - 2)
    (t0, n0), (t1, n1) = points[w], points[-1]
    return (n1 - n0) / (t1 - t0)


def worker_airoad(a: argparse.Namespace) -> dict:
    from airoad.cli import main as cli

    out = Path(tempfile.mkdtemp(prefix=f"gpu-check-{a.worker}-"))
    argv = ["train", "--base_model", a.model, "--dataset_path", a.data, "--output_dir", str(out / "run")]
    argv += ["--max_steps", str(a.steps), "--per_device_batch_size", str(a.batch), "--grad_accum", "1"]
    argv += ["--max_seq_len", str(a.seq), "--learning_rate", "2e-4", "--lr_scheduler", "constant"]
    argv += ["--warmup_ratio", "0", "--lora_r", LORA["r"], "--lora_alpha", LORA["alpha"], "--seed", "42"]
    argv += ["--lora_target_mode", "attn_mlp", "--device", a.device, "--print_every_steps", "1000"]
    argv += ["--lora_dropout", "0" if a.worker == "dora" else LORA["dropout"]]
    argv += {
        "dora": ["--use_dora", "true"],
        "lora_kl_anchor": ["--kl_anchor_path", a.anchors, "--kl_anchor_lambda", "0.5"],
        "lora_liger": ["--liger", "true"],
        "qlora": ["--load_in_4bit", "true"],
    }.get(a.worker, [])
    rc = cli(argv)
    if rc:
        raise SystemExit(f"airoad train exited {rc}")
    rows = json.loads((out / "run" / "train_log.json").read_text())
    info = json.loads((out / "run" / "run_info.json").read_text())
    rate = steady_rate([(r["elapsed_s"], r["tokens"]) for r in rows], a.warmup)
    return {"tokens_per_s": rate, "steps": len(rows), "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
            "dtype": info["dtype"]}  # fmt: skip


def worker_dpo_trl(a: argparse.Namespace) -> dict:
    """TRL DPOTrainer + PEFT LoRA in DPOConfig's defaults (bf16 on the GPU, gradient checkpointing on)
    on the repository's pairs (data/pref), conversational rows as airoad builds its prompts."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from airoad.pref.data import answer_text, prompt_messages

    rows = [json.loads(x) for x in Path(a.data).read_text().splitlines() if x.strip()]
    conv = [
        {"prompt": prompt_messages(r["prompt"], r.get("system_prompt")),
         **{k: [{"role": "assistant", "content": answer_text(r[k])}] for k in ("chosen", "rejected")}}
        for r in rows
    ]  # fmt: skip
    points: list[tuple[float, int]] = []
    cuda = a.device == "cuda"
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16 if cuda else torch.float32)
    cfg = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="gpu-check-dpo-"), max_steps=a.steps, per_device_train_batch_size=DPO["batch"],
        learning_rate=float(DPO["lr"]), lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, report_to="none",
        save_strategy="no", use_cpu=not cuda, bf16=cuda, seed=42, max_length=a.seq, beta=float(DPO["beta"]),
        disable_tqdm=True,
    )  # fmt: skip
    peft_cfg = LoraConfig(r=int(LORA["r"]), lora_alpha=int(LORA["alpha"]), lora_dropout=0.0, target_modules=TARGETS,
                          task_type="CAUSAL_LM")  # fmt: skip
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(conv), processing_class=AutoTokenizer.from_pretrained(a.model),
                         peft_config=peft_cfg, callbacks=[step_clock(points, DPO["batch"])])  # fmt: skip
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"pairs_per_s": steady_rate(points, a.warmup), "steps": len(points), "first_loss": losses[0],
            "last_loss": losses[-1], "dtype": "bfloat16" if cuda else "float32"}  # fmt: skip


def worker_dpo(a: argparse.Namespace) -> dict:
    """`airoad pref` (DPO, its defaults: dtype auto, gradient checkpointing on, as TRL's) on the same pairs."""
    from airoad.cli import main as cli

    out = Path(tempfile.mkdtemp(prefix="gpu-check-dpo-airoad-")) / "run"
    argv = [
        "pref",
        "--base_model",
        a.model,
        "--dataset_path",
        a.data,
        "--output_dir",
        str(out),
        "--method",
        "dpo",
    ]
    argv += ["--max_steps", str(a.steps), "--per_device_batch_size", str(DPO["batch"]), "--grad_accum", "1"]
    argv += ["--max_seq_len", str(a.seq), "--learning_rate", DPO["lr"], "--lr_scheduler", "constant"]
    argv += [
        "--warmup_ratio",
        "0",
        "--beta",
        DPO["beta"],
        "--lora_r",
        LORA["r"],
        "--lora_alpha",
        LORA["alpha"],
    ]
    argv += ["--lora_dropout", "0", "--lora_target_mode", "attn_mlp", "--device", a.device, "--seed", "42"]
    argv += [
        "--print_every_steps",
        "1000",
        "--max_prompt_len",
        str(a.seq // 2),
    ]  # 256: the default at seq 512
    rc = cli(argv)
    if rc:
        raise SystemExit(f"airoad pref exited {rc}")
    rows = json.loads((out / "train_log.json").read_text())
    dtype = json.loads((out / "run_info.json").read_text())["dtype"]
    points = [(r["elapsed_s"], r["step"] * DPO["batch"]) for r in rows]
    return {"pairs_per_s": steady_rate(points, a.warmup), "steps": len(rows), "first_loss": rows[0]["loss"],
            "last_loss": rows[-1]["loss"], "dtype": dtype}  # fmt: skip


def step_clock(points: list[tuple[float, int]], per_step: int = 0):
    """A TrainerCallback appending (seconds since train begin, cumulative count) at each step end: the
    non-pad tokens seen, or ``per_step`` x steps when given (pairs)."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            n = per_step * state.global_step if per_step else int(state.num_input_tokens_seen)
            points.append((time.perf_counter() - self.t0, n))

    return Clock()


def import_trl_or_stub():
    """``trl`` (SFTConfig, SFTTrainer) and whether TRL got the real ``datasets``. TRL imports
    ``datasets`` at module level; where it cannot be imported (the GPU image's pyarrow too old for
    the carried datasets, say) a stub with the names TRL imports stands in, and the rows are
    tokenized here as TRL's prompt-completion preparation would (``skip_prepare_dataset``). TRL
    also imports pyarrow itself: the stub covers a missing ``datasets`` only."""
    try:
        import datasets  # noqa: F401
        import trl
        from trl import SFTConfig, SFTTrainer  # noqa: F401  (trl imports lazily: resolve them now)

        return trl, True
    except (ImportError, RuntimeError):
        for name in [m for m in sys.modules if m == "trl" or m.startswith(("trl.", "datasets"))]:
            del sys.modules[name]
    import importlib.machinery
    import types

    import torch

    class Dataset(torch.utils.data.Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

        @property
        def column_names(self):
            return list(self.rows[0])

        cache_files: list = []  # read by TRL's telemetry

    stub = types.ModuleType("datasets")
    stub.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    stub.Dataset, stub.IterableDataset = Dataset, type("IterableDataset", (), {})
    stub.DatasetDict, stub.IterableDatasetDict = (
        type("DatasetDict", (dict,), {}),
        type("IterableDatasetDict", (dict,), {}),
    )
    stub.concatenate_datasets = stub.load_dataset = None
    fingerprint = types.ModuleType("datasets.fingerprint")
    fingerprint.Hasher = type("Hasher", (), {})
    stub.fingerprint = fingerprint
    sys.modules["datasets"], sys.modules["datasets.fingerprint"] = stub, fingerprint
    import trl

    return trl, False


def trl_rows(tok, data: Path, real_datasets: bool, seq: int):
    """The same conversations as airoad's runs, as TRL takes them: prompt (every turn but the last
    answer) and completion (the last answer), loss on the completion only."""
    convs = [json.loads(x)["messages"] for x in data.read_text().splitlines() if x]
    if real_datasets:
        from datasets import Dataset

        return Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in convs]), {}
    from datasets import Dataset

    rows = []
    for m in convs:
        prompt = tok.apply_chat_template(m[:-1], add_generation_prompt=True, tokenize=True, return_dict=False)
        full = tok.apply_chat_template(m, tokenize=True, return_dict=False)
        ids = list(full)[:seq]
        rows.append({"input_ids": ids, "labels": [-100] * len(prompt) + ids[len(prompt) :]})
    # input_ids and labels only: nothing for the Trainer to remove (it would call datasets' API)
    return Dataset(rows), {"dataset_kwargs": {"skip_prepare_dataset": True}, "remove_unused_columns": False}


def worker_trl(a: argparse.Namespace) -> dict:
    """TRL SFTTrainer + PEFT LoRA; SFTConfig's defaults but for the shared numbers (steps, batch,
    lr, schedule, length) and, for ``trl_nogc``, gradient checkpointing. On CPU (the dry run) bf16
    is off: SFTConfig's bf16 default is for GPUs."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trl, real = import_trl_or_stub()
    tok = AutoTokenizer.from_pretrained(a.model)
    ds, extra = trl_rows(tok, Path(a.data), real, a.seq)
    points: list[tuple[float, int]] = []

    cuda = a.device == "cuda"
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16 if cuda else torch.float32)
    cfg = trl.SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="gpu-check-trl-"), max_steps=a.steps,
        per_device_train_batch_size=a.batch, gradient_accumulation_steps=1, learning_rate=2e-4,
        lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=not cuda, bf16=cuda, gradient_checkpointing=a.worker == "trl", seed=42, max_length=a.seq,
        completion_only_loss=True, include_num_input_tokens_seen="non_padding", disable_tqdm=True, **extra,
    )  # fmt: skip
    peft_cfg = LoraConfig(
        r=int(LORA["r"]), lora_alpha=int(LORA["alpha"]), lora_dropout=float(LORA["dropout"]),
        target_modules=TARGETS, task_type="CAUSAL_LM",
    )  # fmt: skip
    trainer = trl.SFTTrainer(
        model=model,
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        peft_config=peft_cfg,
        callbacks=[step_clock(points)],
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens_per_s": steady_rate(points, a.warmup), "steps": len(points), "first_loss": losses[0],
            "last_loss": losses[-1], "dtype": "bfloat16" if cuda else "float32",
            "datasets": "real" if real else "stub (pre-tokenized rows)", "trl": md.version("trl")}  # fmt: skip


def run_worker(a: argparse.Namespace) -> None:
    if a.block_datasets:  # the dry run of the GPU image's possible case: datasets not importable
        sys.modules["datasets"] = None  # import fails, find_spec says absent (pyarrow is on the image)
    workers = {"dpo_trl": worker_dpo_trl, "dpo": worker_dpo, **{v: worker_trl for v in TRL_VARIANTS}}
    res = workers.get(a.worker, worker_airoad)(a)
    res["peak_gb"], res["peak_kind"] = peak_memory(a.device)
    print("GPU_CHECK_RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------- the run


def env_info(device: str) -> dict:
    import torch

    names = ("torch", "transformers", "peft", "accelerate", "triton", "trl", "datasets", "pyarrow",
             "liger-kernel", "bitsandbytes", "pytest")  # fmt: skip
    info = {"versions": {}, "python": sys.version.split()[0], "device": device}
    for n in names:
        try:
            info["versions"][n] = md.version(n)
        except md.PackageNotFoundError:
            info["versions"][n] = None
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def run_tests(a: argparse.Namespace, out: Path, missing: list[str]) -> str:
    """pytest on the fast paths' test files with --device, group by group (the kernels first: the
    runs' group gets what time is left); returns the summary lines. tests.log: every test's verdict."""
    pythonpath = [str(REPO / "src"), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p)}
    t_end, summaries = time.time() + a.tests_timeout, []
    with (out / "tests.log").open("w") as log:
        for files in TEST_GROUPS:
            # -o addopts=: one process, in order (the suite's default is pytest-xdist, which the GPU
            # image does not carry, and one GPU is one device for all the tests anyway)
            cmd = [sys.executable, "-m", "pytest", *files, "--device", a.device, "-v", "-rs", "--durations=8",
                   "-p", "no:cacheprovider", "-o", "addopts=", *a.pytest_args.split()]  # fmt: skip
            t0, left = time.time(), max(10, int(t_end - time.time()))
            try:
                p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=left)
                text, summary = p.stdout + p.stderr, (p.stdout.strip().splitlines() or ["?"])[-1].strip("= ")
            except subprocess.TimeoutExpired as e:
                text = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
                summary = f"stopped after {left} s (--tests_timeout {a.tests_timeout})"
                missing.append(f"tests {' '.join(files)}: {summary}; tests.log holds the verdicts so far")
            log.write(f"\n===== {' '.join(files)}\n{text}")
            summaries.append(
                f"{', '.join(Path(f).name for f in files)}: {summary} ({time.time() - t0:.0f} s)"
            )
    return "; ".join(summaries)


def run_variant(a: argparse.Namespace, v: str, paths: dict[str, Path], log) -> dict:
    cmd = [sys.executable, __file__, "--worker", v, "--model", str(paths["model"]), "--data", str(paths["pairs" if v in DPO_VARIANTS else "data"]),
           "--anchors", str(paths["anchors"]), "--device", a.device, "--steps", str(a.steps),
           "--batch", str(a.batch), "--seq", str(a.seq), "--warmup", str(a.warmup)]  # fmt: skip
    if a.block_datasets:
        cmd.append("--block_datasets")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    }
    t0 = time.time()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.variant_timeout)
        text = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        text = str(e.stdout or "") + str(e.stderr or "")
        text += f"\nstopped after {a.variant_timeout} s (--variant_timeout)"
    log.write(f"\n===== {v} ({time.time() - t0:.0f} s)\n{text}\n")
    line = next((x for x in text.splitlines() if x.startswith("GPU_CHECK_RESULT ")), None)
    if line:
        return {**json.loads(line[len("GPU_CHECK_RESULT ") :]), "wall_s": round(time.time() - t0, 1)}
    errors = [x for x in text.strip().splitlines() if x.strip()]
    last = next(
        (x for x in reversed(errors) if "Error" in x or x.startswith("error")), errors[-1] if errors else "?"
    )
    return {"error": last.strip()[:300]}


def table(results: dict[str, dict]) -> str:
    kind = next((r["peak_kind"] for r in results.values() if "peak_kind" in r), "peak")
    unit = "GiB max_memory_allocated" if kind == "cuda_max_allocated" else "GiB peak RSS"
    lines = [
        f"| variant | tokens/s | x trl | x trl_nogc | {unit} | x trl | x trl_nogc | first loss | last loss | dtype |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    anchors = [results.get(t) for t in TRL_VARIANTS]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed | | | | | | | | |")
            continue
        x_tps = [
            f"{r['tokens_per_s'] / t['tokens_per_s']:.2f}" if t and "error" not in t else "-" for t in anchors
        ]
        x_mem = [f"{r['peak_gb'] / t['peak_gb']:.2f}" if t and "error" not in t else "-" for t in anchors]
        lines.append(
            f"| {name} | {r['tokens_per_s']:.0f} | {x_tps[0]} | {x_tps[1]} | {r['peak_gb']:.2f} | {x_mem[0]} | "
            f"{x_mem[1]} | {r['first_loss']:.4f} | {r['last_loss']:.4f} | {r.get('dtype', '?')} |"
        )
    return "\n".join(lines)


def dpo_table(results: dict[str, dict]) -> str:
    lines = ["| variant | pairs/s | x dpo_trl | peak GiB | x dpo_trl | first loss | last loss | dtype |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    ref = results.get("dpo_trl")
    ok = ref and "error" not in ref
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed | | | | | | |")
            continue
        x_pps = f"{r['pairs_per_s'] / ref['pairs_per_s']:.2f}" if ok else "-"
        x_mem = f"{r['peak_gb'] / ref['peak_gb']:.2f}" if ok else "-"
        lines.append(
            f"| {name} | {r['pairs_per_s']:.2f} | {x_pps} | {r['peak_gb']:.2f} | {x_mem} | {r['first_loss']:.4f} | "
            f"{r['last_loss']:.4f} | {r['dtype']} |"
        )
    return "\n".join(lines)


def why_not(v: str, device: str, versions: dict) -> str | None:
    """The reason a variant cannot run here, known before trying, or None."""
    if v in ("lora_liger", "qlora") and device != "cuda":
        return f"{v}: needs CUDA ({'Liger is Triton kernels' if v == 'lora_liger' else 'bitsandbytes 4-bit'})"
    pkg = {"lora_liger": "liger-kernel", "qlora": "bitsandbytes"}.get(v)
    if pkg and not versions.get(pkg):
        return f"{v}: {pkg} is not installed (python bench/gpu_check.py --prepare carries it)"
    if (v in TRL_VARIANTS or v in DPO_VARIANTS) and not versions.get("trl"):
        return f"{v}: trl is not installed (python bench/gpu_check.py --prepare carries it)"
    if v in DPO_VARIANTS and not versions.get("datasets"):
        return (
            f"{v}: datasets is not installed (TRL's DPOTrainer and airoad pref build datasets.Dataset rows)"
        )
    return None


def bench(a: argparse.Namespace, work: Path, versions: dict, missing: list[str], out: Path) -> dict:
    import torch

    shape = QWEN25_05B if a.shape == "qwen2.5-0.5b" else {**QWEN25_05B, **TINY}
    t0 = time.time()
    paths = {"model": build_random_model(work / "model", shape, tokenizer_dir(), a.device)}
    if a.device == "cuda":
        torch.cuda.empty_cache()
    n = a.steps * a.batch
    paths["data"] = write_chat_data(work / "train.jsonl", n)
    paths["pairs"] = REPO / "data" / "pref" / "example_pairs.jsonl"
    paths["anchors"] = write_chat_data(work / "anchors.jsonl", 16, turns=2)
    print(f"model ({a.shape}) and data ready in {time.time() - t0:.0f} s", flush=True)
    results: dict[str, dict] = {}
    with (out / "bench.log").open("w") as log:
        for v in a.variants.split(","):
            if reason := why_not(v, a.device, versions):
                missing.append(reason)
                continue
            if time.time() > a.deadline:
                missing.append(f"{v}: not started, the run's --budget_s ({a.budget_s} s) was spent")
                continue
            results[v] = run_variant(a, v, paths, log)
            print(f"{v}: {results[v]}", flush=True)
            if "error" in results[v]:
                missing.append(f"{v}: failed: {results[v]['error']} (bench.log)")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="here: carry wheels and tokenizer in .gpu/")
    ap.add_argument("--no_bnb", action="store_true", help="with --prepare: leave bitsandbytes (41 MiB) out")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check-out"))
    ap.add_argument("--shape", choices=("qwen2.5-0.5b", "tiny"), default="qwen2.5-0.5b")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8, help="steps left out of tokens/s (compile, autotune)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no_tests", action="store_true")
    ap.add_argument("--pytest_args", default="", help="extra pytest arguments, e.g. '-k reference'")
    ap.add_argument("--tests_timeout", type=int, default=220)
    ap.add_argument("--variant_timeout", type=int, default=75)
    ap.add_argument("--budget_s", type=int, default=400, help="no variant starts after this many seconds")
    ap.add_argument(
        "--block_datasets", action="store_true", help="dry run of TRL without importable datasets"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    for hidden in ("--model", "--data", "--anchors"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.prepare:
        return prepare(bnb=not a.no_bnb)
    if a.worker:
        return run_worker(a)
    t_start = time.time()
    a.deadline = t_start + a.budget_s
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    unpack_tokenizer(work)
    info = env_info(a.device)
    (a.out / "env.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info), flush=True)
    missing: list[str] = []
    tests = "not run (--no_tests)" if a.no_tests else run_tests(a, a.out, missing)
    print(f"tests: {tests}", flush=True)
    results = bench(a, work, info["versions"], missing, a.out)
    report(a, info, tests, results, missing, time.time() - t_start)


def report(a, info: dict, tests: str, results: dict, missing: list[str], wall: float) -> None:
    where = f"{info.get('gpu', 'CPU')} (CUDA {info.get('cuda')})" if a.device == "cuda" else "CPU"
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    text = "\n".join(
        [
            f"## GPU check ({time.strftime('%Y-%m-%d')}): {where}",
            "",
            f"Python {info['python']}; {versions}.",
            f"Command: `python bench/gpu_check.py {' '.join(sys.argv[1:])}` ({wall:.0f} s in all).",
            "",
            f"Tests on --device {a.device}: {tests}",
            "",
            f"Training: {a.shape} shape, random weights, {a.steps} steps of {a.batch} conversations (seq <= {a.seq}), "
            f"LoRA r{LORA['r']} on attn+MLP; tokens/s over steps {a.warmup + 1}-{a.steps}. x trl: against TRL "
            "SFTTrainer + PEFT in its defaults (gradient checkpointing on); x trl_nogc: the same without "
            "checkpointing (airoad's default: the same work). TRL's rows: "
            + (", ".join(sorted({r["datasets"] for r in results.values() if "datasets" in r})) or "-")
            + " datasets.",
            "",
            table({k: v for k, v in results.items() if k not in DPO_VARIANTS}),
            "",
            f"Preference training: DPO on data/pref's {sum(1 for _ in open(REPO / 'data/pref/example_pairs.jsonl'))} "
            f"pairs, batch {DPO['batch']}, beta {DPO['beta']}, LoRA r{LORA['r']} attn+MLP, each side's defaults "
            "(gradient checkpointing on); pairs/s after the warm-up steps.",
            "",
            dpo_table({k: v for k, v in results.items() if k in DPO_VARIANTS}),
            "",
            "Not run, and why:",
            *[f"- {m}" for m in missing],
            "",
        ]
    )
    (a.out / "report.md").write_text(text)
    (a.out / "results.json").write_text(
        json.dumps({"env": info, "tests": tests, "bench": results, "missing": missing}, indent=1)
    )
    print(text)


if __name__ == "__main__":
    main()
