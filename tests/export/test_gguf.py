"""`airoad export gguf` on tiny random Qwen2 models with the real Qwen2.5 tokenizer (offline).

Each round trip writes a GGUF, reads it back with transformers (``gguf_file=``) and compares
logits with the merged model; most of its time is gguf-py parsing the 151,936-token vocabulary.
A random 32-wide model has near-tied logits, so q8_0 rounding flips some argmaxes that a trained
model's margins would not: the q8_0 tests use a lower agreement threshold than the default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf", reason="the export extra: pip install -e '.[export]'")
from conftest import RUN_SYSTEM as SYSTEM
from conftest import SHARED, build_tiny_qwen, make_adapter_run

from airoad.cli import main as cli
from airoad.core.base.options import load_config
from airoad.export import common, gguf_run
from airoad.export.schema import GgufConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
FIXTURE = SHARED / "fixtures" / "llama.cpp-qwen2-vocab" / "ggml-vocab-qwen2.gguf"


@pytest.fixture(scope="module")
def untied_dir(tmp_path_factory, qwen_tokenizer) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("untied"), qwen_tokenizer, seed=3, tie=False)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory) -> Path:
    return make_adapter_run(tiny_model_dir, tmp_path_factory.mktemp("lora") / "run", dora=False)


@pytest.fixture(scope="module")
def dora_run(untied_dir, tmp_path_factory) -> Path:
    return make_adapter_run(untied_dir, tmp_path_factory.mktemp("dora") / "run", dora=True)


@pytest.fixture(scope="module")
def cli_export(lora_run, tmp_path_factory) -> tuple[Path, int, str]:
    """`airoad export gguf` (LoRA on a tied base, f16): (out dir, exit status, stdout)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("cli") / "fast_plain_gguf"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(["export", "gguf", "--adapters", str(lora_run), "--out", str(out), "--quant", "f16"])
    return out, rc, buf.getvalue()


def base_logits(base_dir: Path, tokenizer) -> list[torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(input_ids=x).logits for x in common.chat_ids(tokenizer, SYSTEM)]


def export_cfg(run: Path, out: Path, quant: str, *extra: str) -> GgufConfig:
    argv = ["--adapters", str(run), "--out", str(out), "--quant", quant, *extra]
    return load_config(GgufConfig, argv)[0]


def tuned_vs_gguf(base_dir: Path, run: Path, out: Path, qwen_tokenizer) -> dict:
    """The export's check numbers, plus how far the adapter moves the base (must dwarf |dlogit|)."""
    from airoad.core.model.adapter_source import resolve_source
    from airoad.core.model.merging import load_merged

    info = json.loads((out / "export_info.json").read_text())
    tuned, _ = load_merged(resolve_source(None, str(run)))
    with torch.no_grad():
        moved = [
            float((tuned(input_ids=x).logits - b).abs().max())
            for x, b in zip(
                common.chat_ids(qwen_tokenizer, SYSTEM), base_logits(base_dir, qwen_tokenizer), strict=True
            )
        ]
    return {**info["check"], "adapter_effect": max(moved), "info": info}


def test_cli_writes_exactly_the_promised_files_and_reports_the_check(cli_export):
    out, rc, printed = cli_export
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "Modelfile",
        "airoad_manifest.json",
        "export_info.json",
        "model-f16.gguf",
    ]
    assert "verified: transformers reads the GGUF back" in printed and "argmax agreement" in printed
    assert not list(out.parent.glob(f".{out.name}.export-*"))  # no staging left behind


def test_lora_f16_round_trip_is_close_and_carries_the_adapter(
    cli_export, tiny_model_dir, lora_run, qwen_tokenizer
):
    out, rc, _ = cli_export
    assert rc == 0
    c = tuned_vs_gguf(tiny_model_dir, lora_run, out, qwen_tokenizer)
    assert c["max_abs_dlogit"] < 2e-3 and c["argmax_agreement"] >= 0.98, c
    assert c["adapter_effect"] > 50 * c["max_abs_dlogit"], c  # the GGUF holds the tune, not the base
    info = c["info"]
    assert info["quant"] == "f16" and info["adapter"] == "LoRA r=4" and info["tied_head"] is True
    assert info["file_size"] == (out / "model-f16.gguf").stat().st_size
    assert info["tensor_types"] == {
        "F16": 15,
        "F32": 11,
    }  # 2-D weights f16; norms, biases f32; no output.weight


def test_below_the_agreement_threshold_exits_1_and_writes_nothing(
    lora_run, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    """The check's failure path. The GGUF "read back" is the untuned base (read in milliseconds,
    not gguf-py's ~12 s parse of the vocabulary): it disagrees with the tune, as a broken export
    would. The real read-back's numbers are the round-trip tests'."""
    from transformers import AutoModelForCausalLM

    def base_as_read_back(stage, file_name, device):
        assert (stage / file_name).is_file()  # the GGUF was written into the staging dir first
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    monkeypatch.setattr(gguf_run, "read_back", base_as_read_back)
    out = tmp_path / "q8"
    argv = ["export", "gguf", "--adapters", str(lora_run), "--out", str(out), "--quant", "q8_0"]
    rc = cli([*argv, "--min_argmax_agreement", "0.99"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: check failed"), err
    agreement = float(err[0].split(" on ")[1].split("%")[0]) / 100
    assert agreement < 0.99 and "--min_argmax_agreement 0.99" in err[0] and "nothing written" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".q8.export-*"))


@pytest.mark.parametrize("quant, dlogit", [("f16", 2e-3), ("q8_0", 5e-2)])
def test_dora_round_trip_with_an_untied_head(quant, dlogit, untied_dir, dora_run, tmp_path, qwen_tokenizer):
    out = tmp_path / quant
    gguf_run.export(export_cfg(dora_run, out, quant, "--min_argmax_agreement", "0.8"), printer=lambda _: None)
    c = tuned_vs_gguf(untied_dir, dora_run, out, qwen_tokenizer)
    assert c["max_abs_dlogit"] < dlogit and c["argmax_agreement"] >= (0.98 if quant == "f16" else 0.8), c
    assert c["adapter_effect"] > 10 * c["max_abs_dlogit"], c
    info = c["info"]
    assert info["adapter"] == "DoRA r=4" and info["tied_head"] is False
    kind = {"f16": "F16", "q8_0": "Q8_0"}[quant]
    assert info["tensor_types"] == {kind: 16, "F32": 11}  # output.weight written too


def test_modelfile_has_the_gguf_chatml_template_stops_and_the_run_system_prompt(cli_export):
    out, _, _ = cli_export
    text = (out / "Modelfile").read_text()
    lines = text.splitlines()
    assert lines[0] == "FROM ./model-f16.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in lines and 'PARAMETER stop "<|endoftext|>"' in lines
    # Ollama decodes as the tune was judged: greedy, no repetition penalty (its defaults sample)
    assert "PARAMETER temperature 0" in lines and "PARAMETER repeat_penalty 1" in lines
    assert lines[-1] == f'SYSTEM """{SYSTEM}"""'
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    for piece in (
        "<|im_start|>system\n{{ .System }}<|im_end|>",
        "<|im_start|>user\n{{ .Content }}<|im_end|>",
    ):
        assert piece in template
    assert "{{- range $i, $_ := .Messages }}" in template and "<|im_start|>assistant\n" in template
    assert template.count("{{") == template.count("}}")


def test_modelfile_system_line_defaults_to_the_chat_templates_own(qwen_tokenizer):
    from airoad.export.ollama import modelfile, template_default_system

    default = template_default_system(qwen_tokenizer)
    assert default and default.startswith("You are Qwen")
    assert "SYSTEM" not in modelfile("m.gguf", None)
    assert modelfile("m.gguf", "a\nb").endswith('SYSTEM """a\nb"""\n')


# --- the vocabulary: what llama.cpp's converter writes -------------------------------------------


@pytest.fixture(scope="module")
def fixture_vocab() -> dict:
    if not FIXTURE.is_file():
        pytest.skip("../shared/fixtures/llama.cpp-qwen2-vocab not present")
    import gguf

    fields = gguf.GGUFReader(FIXTURE).fields
    return {k: fields[k].contents() for k in fields if k.startswith("tokenizer.")}


def written_vocab(tokenizer, model_dir: Path, tmp_path: Path) -> dict:
    """The tokenizer.* keys add_tokenizer puts in a GGUFWriter (in memory, no file)."""
    import gguf
    from transformers import AutoConfig

    from airoad.export.gguf import add_tokenizer

    writer = gguf.GGUFWriter(path=None, arch="qwen2")
    add_tokenizer(writer, tokenizer, AutoConfig.from_pretrained(model_dir), tmp_path)
    return {k: v.value for k, v in writer.kv_data[0].items() if k.startswith("tokenizer.")}


def test_tokenizer_metadata_equals_llama_cpps_reference_qwen2_vocab(
    fixture_vocab, qwen_tokenizer, tiny_model_dir, tmp_path
):
    import gguf

    ours = written_vocab(qwen_tokenizer, tiny_model_dir, tmp_path)
    ref = fixture_vocab
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.merges"):
        assert ours[key] == ref[key], key
    assert ours["tokenizer.ggml.pre"] == "qwen2" and len(ours["tokenizer.ggml.merges"]) == 151387
    # The reference is Qwen1.5's vocabulary: 151,643 BPE tokens and 3 specials, then padding.
    # Qwen2.5 keeps those ids and adds 19 more specials; compare the shared real-token part exactly.
    ref_tokens, ref_types = ref["tokenizer.ggml.tokens"], ref["tokenizer.ggml.token_type"]
    n_ref = next(i for i, t in enumerate(ref_tokens) if t == f"[PAD{i}]")
    assert n_ref == 151646
    assert ours["tokenizer.ggml.tokens"][:n_ref] == ref_tokens[:n_ref]
    assert ours["tokenizer.ggml.token_type"][:n_ref] == ref_types[:n_ref]
    # Padding rule: one entry per embedding row, every id past the real tokens named [PAD{id}].
    # llama.cpp's converter types them UNUSED now; the reference, written by an older converter,
    # has USER_DEFINED.
    n_vocab = len(ours["tokenizer.ggml.tokens"])
    assert n_vocab == len(ref_tokens) == 151936  # the embedding rows of both models
    n_real = len(qwen_tokenizer.get_added_vocab()) + 151643
    assert ours["tokenizer.ggml.tokens"][n_real:] == [f"[PAD{i}]" for i in range(n_real, n_vocab)]
    assert set(ours["tokenizer.ggml.token_type"][n_real:]) == {gguf.TokenType.UNUSED}
    assert set(ref_types[n_ref:]) <= {gguf.TokenType.UNUSED, gguf.TokenType.USER_DEFINED}
    # Qwen2.5's added tokens: specials are CONTROL, <tool_call>/</tool_call> (not special) USER_DEFINED.
    added = dict(
        zip(
            ours["tokenizer.ggml.tokens"][n_ref:n_real],
            ours["tokenizer.ggml.token_type"][n_ref:n_real],
            strict=True,
        )
    )
    assert added["<tool_call>"] == added["</tool_call>"] == gguf.TokenType.USER_DEFINED
    assert added["<|fim_prefix|>"] == gguf.TokenType.CONTROL
    # Special ids as llama.cpp writes them: bos and pad <|endoftext|> as in the reference; eos the
    # tokenizer's own (<|im_end|> for the instruct tokenizer, <|endoftext|> for the reference's base one).
    for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.padding_token_id"):
        assert ours[key] == ref[key] == 151643, key
    assert ours["tokenizer.ggml.eos_token_id"] == qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ours["tokenizer.chat_template"] == qwen_tokenizer.chat_template


def test_vocab_pads_to_the_embedding_rows_whatever_their_number(qwen_tokenizer):
    import gguf

    from airoad.export.gguf import ExportError, vocab_entries

    tokens, types = vocab_entries(qwen_tokenizer, 152064)  # e.g. Qwen2.5-7B's embedding
    assert len(tokens) == len(types) == 152064 and tokens[-1] == "[PAD152063]"
    assert types[-1] == gguf.TokenType.UNUSED
    with pytest.raises(ExportError, match="embedding rows"):
        vocab_entries(qwen_tokenizer, 1000)


# --- user mistakes: one line, exit 2, nothing written ----------------------------------------------


def one_error(capsys, argv: list[str]) -> str:
    rc = cli(["export", "gguf", *argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_a_missing_adapter_dir_is_one_line(tmp_path, capsys):
    line = one_error(capsys, ["--adapters", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert "no such directory" in line and str(tmp_path / "nope") in line
    assert not (tmp_path / "o").exists()


def test_a_non_empty_out_is_refused_without_overwrite(lora_run, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = one_error(capsys, ["--adapters", str(lora_run), "--out", str(out)])
    assert "is not empty" in line and "--overwrite" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_out_inside_the_adapter_dir_is_refused(lora_run, capsys):
    line = one_error(capsys, ["--adapters", str(lora_run), "--out", str(lora_run / "gguf")])
    assert "inside the input --adapters" in line
    assert not (lora_run / "gguf").exists()


@pytest.mark.parametrize(
    "quant, says",
    [("q9_9", "unknown weight type"), ("f61", "did you mean f16?"), ("q4_k_m", "llama.cpp's quantizer")],
)
def test_unknown_or_k_quants_are_one_line(quant, says, lora_run, tmp_path, capsys):
    line = one_error(capsys, ["--adapters", str(lora_run), "--out", str(tmp_path / "o"), "--quant", quant])
    assert f"--quant {quant}" in line and says in line
    if quant == "q4_k_m":
        assert "llama-cpp-python" in line
    assert not (tmp_path / "o").exists()


def test_unknown_flag_names_the_closest(capsys):
    line = one_error(capsys, ["--adapter", "x", "--out", "y"])
    assert "--adapters" in line


def test_export_without_a_target_lists_gguf(capsys):
    assert cli(["export"]) == 2  # a command missing its target is a mistake: usage on stderr
    assert "gguf" in capsys.readouterr().err
    assert cli(["export", "--help"]) == 0
    assert "gguf" in capsys.readouterr().out
    assert cli(["export", "ggu"]) == 2
    assert "did you mean `airoad export gguf`" in capsys.readouterr().err


def test_llama_cpp_generates_what_transformers_generates_from_the_gguf(lora_run, tmp_path):
    """llama.cpp itself (llama-cpp-python) reads the f16 GGUF, tokenises the chat prompts as
    transformers does and generates the same 32 greedy tokens on each check chat."""
    pytest.importorskip("llama_cpp", reason="pip install llama-cpp-python (builds llama.cpp)")
    out = tmp_path / "lc"
    lines: list[str] = []
    gguf_run.export(export_cfg(lora_run, out, "f16"), printer=lines.append)
    gen = json.loads((out / "export_info.json").read_text())["llama_cpp_generation"]
    assert gen["tokenizer_equal"] is True and gen["prompts"] == 3
    assert gen["identical"] == 3, gen["rows"]
    assert all(r["hf_tokens"] >= 8 for r in gen["rows"])  # a real continuation, not an instant stop
    assert any(line.startswith("llama.cpp (llama-cpp-python") for line in lines)


def test_without_llama_cpp_the_generation_check_says_how_to_get_it(request, tmp_path, monkeypatch):
    from airoad.export import llama_cpp_check

    if not llama_cpp_check.available():  # the CLI export of this module already ran without it
        out, rc, printed = request.getfixturevalue("cli_export")
        lines = printed.splitlines()
        assert rc == 0
    else:  # with llama.cpp installed: export once more, as if it were not
        monkeypatch.setattr(llama_cpp_check, "available", lambda: False)
        out = tmp_path / "nolc"
        lines = []
        gguf_run.export(export_cfg(request.getfixturevalue("lora_run"), out, "f16"), printer=lines.append)
    assert "llama.cpp generation check skipped: pip install llama-cpp-python to run it" in lines
    assert json.loads((out / "export_info.json").read_text())["llama_cpp_generation"] is None


def test_an_empty_system_prompt_means_the_templates_default_as_in_every_command(qwen_tokenizer):
    from types import SimpleNamespace as NS

    from airoad.export.common import system_line
    from airoad.export.ollama import template_default_system

    default = template_default_system(qwen_tokenizer)
    run = NS(system_prompt="You are terse.")
    assert system_line(NS(system_prompt=None), run, qwen_tokenizer) == "You are terse."  # the run's
    assert system_line(NS(system_prompt=""), run, qwen_tokenizer) == default  # "": the template's
    assert system_line(NS(system_prompt="Mine."), run, qwen_tokenizer) == "Mine."
    assert system_line(NS(system_prompt=None), NS(system_prompt=None), qwen_tokenizer) == default
