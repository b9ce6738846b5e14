"""`airoad probe` on a tiny random Qwen2 with the real tokenizer (offline, seconds): one probe run is
shared by the tests that read its page; mistakes are checked without a model."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import CHAT_ROWS, REPO, write_jsonl

from airoad.cli import main as cli
from airoad.core.base.options import load_config
from airoad.core.base.outputs import recorded
from airoad.core.data.chat_data import file_sha256
from airoad.core.run.rundir import RUN_FILES
from airoad.infer.prompts import load_prompts
from airoad.probe.report import ReportInputs, render
from airoad.probe.run import PROBE_FILES, train_flags
from airoad.probe.schema import ProbeConfig

GENERAL = REPO / "data" / "eval" / "general_prompts.jsonl"
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
CPU = ["--device", "cpu", "--dtype", "float32"]
# peft calls a transformers property deprecated in v5 when it wraps a model
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


def train_yaml(path: Path, base: str, out: Path, data: Path, dev: Path | None = None) -> Path:
    """A train YAML for a few fast, far-moving steps on CPU in fp32 (answers compare exactly)."""
    lines = [
        f"# airoad probe --config {path.name}",
        f"base_model: {base}",
        f"dataset_path: {data}",
        f"output_dir: {out}",
        "max_steps: 4",
        "grad_accum: 1",
        "learning_rate: 3.0e-2",
        "warmup_ratio: 0",
        "lr_scheduler: constant",
        "lora_dropout: 0",
        "eval_every_steps: 2",
        "device: cpu",
        "dtype: float32",
        "system_prompt: Be brief.",
    ]
    if dev:
        lines.append(f"dev_path: {dev}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def probe_argv_for(yaml: Path, dev: Path, *extra: str) -> list[str]:
    """A probe of 4 dev prompts (eval and compare), 6 new tokens, on CPU in fp32, plus ``extra``."""
    return [
        *["probe", "--config", str(yaml), "--prompts", str(dev), "--n", "4", "--compare_n", "4"],
        *["--max_new_tokens", "6", *CPU, *extra],
    ]


def airoad_tmp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("airoad-probe-*")}


@pytest.fixture(scope="module")
def probe_run(tiny_model_dir, tmp_path_factory) -> SimpleNamespace:
    """One probe with --expect and --general_prompts, seed and steps overridden with --set."""
    root = tmp_path_factory.mktemp("probe")
    data = write_jsonl(root / "train.jsonl", CHAT_ROWS * 3)
    dev = write_jsonl(root / "dev.jsonl", CHAT_ROWS)
    yaml = train_yaml(root / "probe.yaml", str(tiny_model_dir), root / "run", data, dev)
    extra = ["--expect", r"\w", "--general_prompts", str(GENERAL), "--general_n", "5"]
    extra += ["--set", "seed=3", "--set", "max_steps=4"]
    before = airoad_tmp_dirs()
    argv = probe_argv_for(yaml, dev, *extra)
    status = cli(argv)
    out = root / "run"
    return SimpleNamespace(
        root=root,
        out=out,
        yaml=yaml,
        dev=dev,
        data=data,
        argv=argv,
        status=status,
        tmp_left=airoad_tmp_dirs() - before,
        page=(out / "probe_report.md").read_text(encoding="utf-8") if status == 0 else "",
    )


def section(page: str, title: str) -> str:
    """The text of the ``## title`` section of the page (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", page, flags=re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows of ``text`` keyed by their first cell (the header and rule rows too)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells[1:]
    return rows


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- one probe, its files


def test_probe_writes_exactly_the_promised_files_and_records_them(probe_run):
    assert probe_run.status == 0
    names = {p.name for p in probe_run.out.iterdir()}
    assert names - set(RUN_FILES) - TOKENIZER_FILES == set(PROBE_FILES)
    assert set(PROBE_FILES) <= recorded(probe_run.out)  # a later --overwrite knows them as airoad's
    assert not (probe_run.root / "run_probe").exists()  # the report's commands' folder is not made
    assert not probe_run.tmp_left  # the steps' temporary folder is gone
    assert not (probe_run.out / ".airoad.lock").exists()
    for name in ("probe_compare.json", "probe_eval.json", "probe_eval_general.json"):
        assert load(probe_run.out / name)["adapters"] == str(probe_run.out)
    assert load(probe_run.out / "probe_eval_general.json")["prompts"] == str(GENERAL)


def test_report_metric_table_has_base_and_tuned_columns_and_pct_expect(probe_run):
    metrics = section(probe_run.page, "Base vs tuned")
    dev, general = metrics.split("### General prompts")
    report = load(probe_run.out / "probe_eval.json")
    rows = table_rows(dev)
    assert rows["metric"] == ["base", "tuned", "change", "what"]
    base, tuned = report["summary"]["base"], report["summary"]["tuned"]
    for m in ("pct_list", "pct_heading", "pct_expect", "avg_len_tokens"):
        assert rows[m][:2] == [f"{base[m]:.1f}", f"{tuned[m]:.1f}"], m
        assert float(rows[m][2]) == pytest.approx(tuned[m] - base[m], abs=0.051)
    assert rows["avg_banned_hits"][:2] == [
        f"{base['avg_banned_hits']:.2f}",
        f"{tuned['avg_banned_hits']:.2f}",
    ]
    assert rows["n"][:2] == ["4", "4"]
    assert rows["drift"][:2] == ["-", f"{report['drift']:.4f}"] and report["drift"] > 0
    assert r"\w" in rows["pct_expect"][3]
    general_rows = table_rows(general)
    assert general_rows["n"][:2] == ["5", "5"] and "pct_expect" not in general_rows
    assert general_rows["drift"][1] == f"{load(probe_run.out / 'probe_eval_general.json')['drift']:.4f}"
    glance = section(probe_run.page, "At a glance")
    assert "on the dev prompts" in glance and "on the general prompts" in glance


def test_report_shows_exactly_three_answers_side_by_side(probe_run):
    answers = section(probe_run.page, "Answers side by side")
    samples = load(probe_run.out / "probe_compare.json")["samples"]
    assert len(samples) == 4  # --compare_n 4: all in probe_compare.md, three on the page
    headings = re.findall(r"^### \d+\. (.*)$", answers, flags=re.M)
    assert len(headings) == 3
    assert headings == [" ".join(s["prompt"].split())[:80] for s in samples[:3]]
    assert answers.count("**base**") == answers.count("**tuned**") == 3
    for s in samples[:3]:
        assert s["tuned"]["answer"] in answers and s["base"]["answer"] in answers
    assert "all 4 in `probe_compare.md`" in answers
    assert (probe_run.out / "probe_compare.md").read_text().count("**tuned**") == 4


def test_report_loss_rows_are_the_train_logs(probe_run):
    loss = section(probe_run.page, "Loss")
    assert "![loss curve](loss_curve.png)" in loss
    log = load(probe_run.out / "train_log.json")
    rows = table_rows(loss)
    assert rows["step"] == ["loss", "dev loss"]  # no KL term: no ce/kl columns
    assert [int(s) for s in rows if s.isdigit()] == [r["step"] for r in log]  # 4 steps: every one
    for r in log:
        dev = "-" if r["eval_loss"] is None else f"{r['eval_loss']:.4f}"
        assert rows[str(r["step"])] == [f"{r['loss']:.4f}", dev]
    assert sum(r["eval_loss"] is not None for r in log) == 2
    assert f"Training loss {log[0]['loss']:.4f} -> {log[-1]['loss']:.4f}" in probe_run.page


def test_report_run_summary_names_the_data_and_its_hash(probe_run):
    rows = table_rows(section(probe_run.page, "Run"))
    assert str(probe_run.data) in rows["data"][0] and file_sha256(probe_run.data) in rows["data"][0]
    assert file_sha256(probe_run.dev) in rows["dev data"][0]
    assert rows["adapter"][0].startswith("LoRA r=16, alpha 32.0")
    assert rows["steps"][0].startswith("4 of max_steps 4 (stop: max_steps)")
    assert rows["learning rate"][0].startswith("0.03, constant")
    assert rows["KL to the base"] == ["kl_lambda 0.0"]
    assert rows["max_seq_len, seed"] == ["512, 3"]  # --set seed=3 reached train


def test_reproduce_commands_are_the_steps_and_rerun_them(probe_run, tmp_path):
    block = section(probe_run.page, "Reproduce").split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands[0] == shlex.join(["airoad", *probe_run.argv])
    assert commands[1] == shlex.join(
        ["airoad", "train", "--config", str(probe_run.yaml), "--seed", "3", "--max_steps", "4"]
    )
    assert [shlex.split(c)[1] for c in commands[2:]] == ["compare", "eval", "eval"]
    dev_eval = shlex.split(commands[3])
    assert dev_eval[dev_eval.index("--expect") + 1] == r"\w"
    out = dev_eval.index("--out") + 1
    assert dev_eval[out] == str(probe_run.root / "run_probe" / "eval.json")  # beside the run dir
    # the dev eval again, as printed (its report elsewhere): the same scores and drift as the probe's
    dev_eval[out] = str(tmp_path / "eval.json")
    assert cli(dev_eval[1:]) == 0
    again = load(tmp_path / "eval.json")
    probe = load(probe_run.out / "probe_eval.json")
    for side in ("base", "tuned"):
        keep = {k: v for k, v in probe["summary"][side].items() if k != "avg_tokens_per_s"}
        assert {k: again["summary"][side][k] for k in keep} == keep
    assert again["drift"] == pytest.approx(probe["drift"], rel=1e-5)
    assert [s["tuned"]["answer"] for s in again["samples"]] == [
        s["tuned"]["answer"] for s in probe["samples"]
    ]


def test_overwrite_replaces_the_probe_files_and_a_plain_probe_has_no_expect(probe_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(probe_run.out, out)
    argv = probe_argv_for(
        probe_run.yaml, probe_run.dev, "--set", f"output_dir={out}", "--set", "overwrite=true"
    )
    assert cli(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert names - set(RUN_FILES) - TOKENIZER_FILES == set(PROBE_FILES) - {"probe_eval_general.json"}
    page = (out / "probe_report.md").read_text(encoding="utf-8")
    assert "pct_expect" not in page and "### General prompts" not in page
    assert "add `--general_prompts data/eval/general_prompts.jsonl`" in page
    assert "pct_expect" not in load(out / "probe_eval.json")["summary"]["tuned"]


# --------------------------------------------------------------------------- mistakes: one line, exit 2


@pytest.fixture()
def plain_yaml(tmp_path) -> Path:
    data = write_jsonl(tmp_path / "train.jsonl", CHAT_ROWS)
    return train_yaml(tmp_path / "t.yaml", "no/such-model", tmp_path / "run", data)


def one_error_line(capsys, status: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--nn", "3"], "unknown flag --nn; did you mean --n?"),
        (["--n", "-1"], "--n = -1 must be >= 0"),
        (["--set", "max_steps"], "--set 'max_steps': give KEY=VALUE"),
        (["--set", "config=x.yaml"], "the train YAML is given as --config FILE"),
        (["--set", "seed=1", "--set", "seed=2"], "--set seed given twice"),
        (["--set"], "argument --set: expected at least one argument"),
        (["--expect", "(unclosed"], "--expect '(unclosed': not a valid regular expression"),
        (["--prompts", "/no/such/prompts.jsonl"], "--prompts /no/such/prompts.jsonl: no such file"),
        (["--general_prompts", "/no/such/g.jsonl"], "--prompts /no/such/g.jsonl: no such file"),
        (["--set", "max_stepz=3"], "unknown flag --max_stepz; did you mean --max_steps?"),  # train's line
        (["--set", "learning_rate=-1"], "--learning_rate = -1.0 must be > 0"),
    ],
)
def test_a_mistake_is_one_line_and_nothing_is_written(plain_yaml, extra, message, capsys):
    line = one_error_line(capsys, cli(["probe", "--config", str(plain_yaml), *extra]))
    assert message in line
    assert not (plain_yaml.parent / "run").exists()


def test_config_is_required(capsys):
    line = one_error_line(capsys, cli(["probe", "--n", "3"]))
    assert "--config is required; give the train YAML, e.g. --config configs/slm/" in line


@pytest.mark.parametrize(
    "content, message",
    [
        ("base_model: [unclosed\n", "invalid YAML"),
        ("- a list\n- not a mapping\n", "must be a mapping"),
        (b"output_dir: caf\xe9\n", "not UTF-8"),
        (None, "no such file"),
        ("dir", "is a directory"),
    ],
)
def test_a_yaml_it_cannot_read_is_one_line(tmp_path, content, message, capsys):
    path = tmp_path / "bad.yaml"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    line = one_error_line(capsys, cli(["probe", "--config", str(path)]))
    assert message in line and str(path) in line


def test_a_users_file_in_the_run_dir_is_never_replaced(plain_yaml, capsys):
    run = plain_yaml.parent / "run"
    run.mkdir()
    (run / "probe_report.md").write_text("my notes\n")
    line = one_error_line(capsys, cli(["probe", "--config", str(plain_yaml), "--set", "resume=true"]))
    assert "holds probe_report.md, which airoad did not write" in line
    assert (run / "probe_report.md").read_text() == "my notes\n"


def test_repeated_set_adds_up_and_config_is_the_train_yaml():
    argv = ["--set", "a=1", "--config=t.yaml", "--n", "3", "--set", "b=2", "c=-1"]
    cfg, _ = load_config(ProbeConfig, argv)
    assert (cfg.config, cfg.n, cfg.set) == ("t.yaml", 3, ["a=1", "b=2", "c=-1"])
    assert train_flags({"max_steps": "20", "system_prompt": "-terse-"}) == [
        "--max_steps",
        "20",
        "--system_prompt=-terse-",
    ]


def test_help_lists_every_option_and_imports_no_torch():
    code = (
        "import sys\nfrom airoad.cli import main\nmain(['probe', '--help'])\n"
        "assert 'torch' not in sys.modules, 'help imported torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in (
        "--config FILE",
        "--set KEY=VALUE",
        "--prompts",
        "--general_prompts",
        "--expect",
        "--max_new_tokens",
    ):
        assert flag in proc.stdout


# --------------------------------------------------------------------------- the page alone, the prompts


def test_the_page_of_a_run_without_dev_loss_or_general_prompts_says_what_is_missing():
    summary = {"n": 2, "pct_list": 50.0, "pct_heading": 0.0, "avg_banned_hits": 0.0, "avg_len_tokens": 9.0}
    dev = {"n_prompts": 2, "summary": {"base": summary, "tuned": summary}, "drift": 0.0, "drift_tokens": 18}
    rows = [{"step": s, "loss": 2.0 - s / 10, "eval_loss": None} for s in range(1, 21)]
    page = render(ReportInputs("out", {}, {}, {}, rows, {"samples": []}, dev))
    assert "No dev loss was logged" in page and "add `--general_prompts" in page
    steps = [c for c in table_rows(section(page, "Loss")) if c.isdigit()]
    assert steps[0] == "1" and steps[-1] == "20" and len(steps) == 6  # evenly spaced, ends kept
    assert "The first 0 compare prompts" in page


def test_general_prompts_file_loads_with_the_prompt_loader_and_holds_40_unique_prompts():
    prompts = load_prompts(GENERAL)
    assert len({p.user for p in prompts}) == len(prompts) >= 40
    assert all(p.system is None for p in prompts)  # the run's own system prompt applies


def test_the_probe_runs_commands_by_name_and_imports_no_lane():
    """It stands on the core, airoad.cli (the steps, by name) and the tools' torch-free modules."""
    from test_architecture import GRAPH

    allowed = {"airoad.cli", "airoad.infer.schema", "airoad.infer.prompts", "airoad.infer.compare"}
    allowed |= {"airoad.infer.style_eval"}
    for module in (m for m in GRAPH if m.startswith("airoad.probe")):
        bad = {
            t for t in GRAPH[module] if not t.startswith(("airoad.core", "airoad.probe")) and t not in allowed
        }
        assert not bad, (module, bad)


def test_the_page_of_an_anchored_run_names_the_anchors_and_logs_their_kl():
    summary = {"n": 2, "pct_list": 50.0, "pct_heading": 0.0, "avg_banned_hits": 0.0, "avg_len_tokens": 9.0}
    dev = {"n_prompts": 2, "summary": {"base": summary, "tuned": summary}, "drift": 0.0, "drift_tokens": 18}
    cfg = {"kl_lambda": 0.0, "kl_tau": 1.0, "kl_anchor_path": "anchors.jsonl", "kl_anchor_lambda": 4.0}
    info = {"data": {"kl_anchor_path_sha256": "ab12", "stats": {"extra": {"anchor": {"kept": 32}}}}}
    rows = [
        {"step": 1, "loss": 1.5, "ce": 1.5, "kl_anchor": 0.0, "eval_loss": None},
        {"step": 2, "loss": 1.2, "ce": None, "kl_anchor": 0.02, "eval_loss": 0.9},
    ]
    page = render(ReportInputs("out", cfg, info, {}, rows, {"samples": []}, dev))
    kl = table_rows(section(page, "Run"))["KL to the base"][0]
    assert "anchors `anchors.jsonl` (32 conversations, KL only)" in kl and "kl_anchor_lambda 4.0" in kl
    assert "`ab12`" in kl
    loss = table_rows(section(page, "Loss"))
    assert loss["step"] == ["loss", "ce", "kl_anchor", "dev loss"]
    assert loss["1"] == ["1.5000", "1.5000", "0.0000", "-"]
    assert loss["2"] == ["1.2000", "-", "0.0200", "0.9000"]
