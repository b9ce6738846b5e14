"""`airoad export coreml` on tiny random Qwen2 models with the real Qwen2.5 tokenizer (offline).

The package itself only runs on macOS 15 / iOS 18, so what is tested here is what Linux can see:
the traced wrapper, KV cache and all, against the plain model (chunked prefill, then decode), and
the package's spec read back (functions, inputs, outputs, states, state writes per layer).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("coremltools", reason="the export extra: pip install -e '.[export]'")
from conftest import RUN_SYSTEM, build_tiny_qwen, make_adapter_run

from airoad.cli import main as cli
from airoad.export import common, coreml_pack, coreml_run, coreml_wrapper

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
CONTEXTS = (64, 128)


@pytest.fixture(scope="module")
def untied_dir(tmp_path_factory, qwen_tokenizer) -> Path:
    return build_tiny_qwen(tmp_path_factory.mktemp("untied"), qwen_tokenizer, seed=5, tie=False)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory) -> Path:
    return make_adapter_run(tiny_model_dir, tmp_path_factory.mktemp("lora") / "run", dora=False)


@pytest.fixture(scope="module")
def dora_run(untied_dir, tmp_path_factory) -> Path:
    return make_adapter_run(untied_dir, tmp_path_factory.mktemp("dora") / "run", dora=True)


def run_cli(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(["export", "coreml", *argv])
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def fp16_export(lora_run, tmp_path_factory) -> tuple[Path, int, str]:
    """`airoad export coreml` of a LoRA run, two context lengths, fp16: (out, exit status, stdout)."""
    out = tmp_path_factory.mktemp("cli") / "fast_plain_coreml"
    rc, printed = run_cli("--adapters", str(lora_run), "--out", str(out), "--context", "64,128")
    return out, rc, printed


def merged(run: Path):
    from airoad.core.model.adapter_source import resolve_source
    from airoad.core.model.merging import load_merged

    return load_merged(resolve_source(None, str(run)))


@pytest.mark.parametrize("which", ["lora", "dora"])
def test_traced_wrapper_with_its_cache_equals_the_tuned_model(which, lora_run, dora_run, qwen_tokenizer):
    model, tokenizer = merged(lora_run if which == "lora" else dora_run)
    ids = common.chat_ids(tokenizer, RUN_SYSTEM)
    traced = coreml_wrapper.trace(model, 128)
    check = coreml_wrapper.parity(traced, model, ids)
    # every position after a chunked prefill and each decode step; fp16 cache rounding only
    assert check["positions"] == sum(len(coreml_wrapper._steps(min(x.shape[1], 128), 3)) for x in ids)
    assert check["max_abs_dlogit"] < 2e-3 and check["argmax_agreement"] == 1.0, check
    assert float(traced.keyCache.abs().sum()) == 0  # parity leaves the cache empty


def test_the_check_fails_when_the_cache_is_not_kept(tiny_model_dir):
    """A wrapper that forgets its cache between calls: the parity check must see it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    traced = coreml_wrapper.trace(model, 64)

    class Forgetful(torch.nn.Module):
        keyCache, valueCache = traced.keyCache, traced.valueCache

        def __call__(self, ids, mask):
            coreml_wrapper.reset(traced)
            return traced(ids, mask)

    torch.manual_seed(0)
    ids = [torch.randint(0, 1000, (1, 40))]
    good = coreml_wrapper.parity(traced, model, ids)
    bad = coreml_wrapper.parity(Forgetful(), model, ids)
    assert good["max_abs_dlogit"] < 1e-3
    assert bad["max_abs_dlogit"] > 100 * good["max_abs_dlogit"] and bad["argmax_agreement"] < 1.0


def test_causal_mask_lets_each_new_token_see_the_cache_and_itself_only():
    m = coreml_wrapper.causal_mask(2, 5)[0, 0]
    assert m.shape == (2, 5)
    assert (m[0, :4] == 0).all() and m[0, 4] < -6e4  # token 3 sees rows 0..3
    assert (m[1] == 0).all()  # token 4 sees rows 0..4


def test_cli_writes_exactly_the_promised_files_and_reports_its_checks(fp16_export):
    out, rc, printed = fp16_export
    assert rc == 0, printed
    assert sorted(p.name for p in out.iterdir()) == [
        "airoad_manifest.json",
        "export_info.json",
        "model.mlpackage",
        "tokenizer",
    ]
    assert printed.count("traced with its cache") == 2 and "argmax agreement 100.0%" in printed
    assert "verified spec of model.mlpackage" in printed and "not run here" in printed
    assert not list(out.parent.glob(f".{out.name}.export-*"))


def test_package_spec_has_a_function_per_context_with_inputs_outputs_and_states(fp16_export):
    out, _, _ = fp16_export
    spec = coreml_pack.read_spec(out / "model.mlpackage")
    assert sorted(spec["functions"]) == ["ctx_128", "ctx_64"] and spec["default_function"] == "ctx_128"
    for context in CONTEXTS:
        f = spec["functions"][f"ctx_{context}"]
        assert f["inputs"] == {
            "inputIds": {"dtype": "INT32", "shape": [[1, 1], [1, context]]},
            "causalMask": {"dtype": "FLOAT32", "shape": [[1, 1], [1, 1], [1, context], [1, context]]},
        }
        assert f["outputs"]["logits"]["dtype"] == "FLOAT32"
        assert f["outputs"]["logits"]["shape"][-1] == [151936, 151936]
        # 2 layers, 2 kv heads, head_dim 32 / 4 = 8
        want = {"dtype": "FLOAT16", "shape": [[2, 2], [1, 1], [2, 2], [context, context], [8, 8]]}
        assert f["states"] == {"keyCache": want, "valueCache": want}
        assert f["write_state_ops"] == 4  # keys and values, each layer
    shapes = {c: (2, 1, 2, c, 8) for c in CONTEXTS}
    assert coreml_pack.spec_problems(spec, shapes, layers=2) == []
    assert coreml_pack.spec_problems(spec, {256: (2, 1, 2, 256, 8)}, layers=2) == ["function ctx_256 missing"]
    assert coreml_pack.spec_problems(spec, shapes, layers=3)  # a missing state write is seen


def test_metadata_carries_the_prompt_wrapper_stops_and_contexts(fp16_export, qwen_tokenizer):
    out, _, _ = fp16_export
    meta = coreml_pack.read_spec(out / "model.mlpackage")["metadata"]
    wrapper = meta["airoad.prompt_wrapper"]
    filled = wrapper.replace("{system}", RUN_SYSTEM).replace("{user}", "Hi {there}")
    filled = filled.replace("{{", "{").replace("}}", "}")
    chat = [{"role": "system", "content": RUN_SYSTEM}, {"role": "user", "content": "Hi {there}"}]
    assert filled == qwen_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert meta["airoad.system_prompt"] == RUN_SYSTEM  # the run's own
    im_end, eot = (qwen_tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>"))
    assert set(meta["airoad.eos_token_ids"].split(",")) == {str(im_end), str(eot)}
    assert meta["airoad.context_lengths"] == "64,128" and meta["airoad.functions"] == "ctx_64,ctx_128"
    info = json.loads((out / "export_info.json").read_text())
    assert info["adapter"] == "LoRA r=4" and info["quant"] == "fp16" and info["context_lengths"] == [64, 128]
    assert set(info["parity"]) == {"64", "128"} and "coremltools" in info["versions"]


def test_tokenizer_dir_loads_and_keeps_the_chat_template_in_its_config(fp16_export, qwen_tokenizer):
    from transformers import AutoTokenizer

    out, _, _ = fp16_export
    config = json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())
    assert config["chat_template"] == qwen_tokenizer.chat_template  # where swift-transformers reads it
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert tok("Hello world")["input_ids"] == qwen_tokenizer("Hello world")["input_ids"]


@pytest.fixture(scope="module")
def quant_exports(dora_run, tmp_path_factory) -> dict[str, tuple[Path, int, str]]:
    """`airoad export coreml` of a DoRA run at one context, fp16, int8 and int4: quant -> (out dir,
    exit status, stdout). One conversion per precision, read by the size and the report tests."""
    exports = {}
    for quant in ("fp16", "int8", "int4"):
        out = tmp_path_factory.mktemp("quant") / quant
        rc, printed = run_cli(
            # a random tiny model's near-ties fail the compression check (see the int4 refusal test)
            *("--adapters", str(dora_run), "--out", str(out), "--context", "64", "--quant", quant),
            *("--min_argmax_agreement", "0"),
        )
        exports[quant] = (out, rc, printed)
    return exports


def test_int4_and_int8_packages_are_smaller_and_keep_the_spec(quant_exports):
    sizes = {}
    for quant, (out, rc, printed) in quant_exports.items():
        assert rc == 0, printed
        spec = coreml_pack.read_spec(out / "model.mlpackage")
        assert coreml_pack.spec_problems(spec, {64: (2, 1, 2, 64, 8)}, layers=2) == []
        sizes[quant] = coreml_run.dir_size(out / "model.mlpackage")
    assert sizes["int4"] < sizes["int8"] < sizes["fp16"], sizes


def test_below_the_agreement_threshold_exits_1_and_writes_nothing(lora_run, tmp_path, capsys, monkeypatch):
    real = coreml_wrapper.parity
    monkeypatch.setattr(coreml_wrapper, "parity", lambda *a, **k: {**real(*a, **k), "argmax_agreement": 0.5})
    out = tmp_path / "bad"
    rc = cli(["export", "coreml", "--adapters", str(lora_run), "--out", str(out), "--context", "64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: check failed"), err
    assert not out.exists() and not list(tmp_path.glob(".bad.export-*"))


def one_error_line(capsys, *argv: str) -> str:
    rc = cli(["export", "coreml", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


def test_a_missing_adapter_dir_is_one_line(tmp_path, capsys):
    line = one_error_line(capsys, "--adapters", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert "nope" in line


def test_a_non_empty_out_is_refused_without_overwrite(lora_run, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    line = one_error_line(capsys, "--adapters", str(lora_run), "--out", str(out))
    assert "--out" in line and "is not empty" in line
    assert (out / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--context", "2k"], "--context 2k"),
        (["--context", "8"], "--context 8"),
        (["--quant", "int3"], "--quant"),
        (["--contxt", "64"], "--context"),
    ],
)
def test_bad_options_are_one_line(argv, says, lora_run, tmp_path, capsys):
    line = one_error_line(capsys, "--adapters", str(lora_run), "--out", str(tmp_path / "o"), *argv)
    assert says in line, line


def test_a_context_beyond_the_model_is_one_line(lora_run, tmp_path, capsys):
    line = one_error_line(
        capsys, "--adapters", str(lora_run), "--out", str(tmp_path / "o"), "--context", "4096"
    )
    assert "max_position_embeddings 1024" in line and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "versions, says",
    [
        ({"coremltools": None, "numpy": "2.3.5"}, "coremltools package is not installed"),
        ({"coremltools": "9.0", "numpy": "2.4.1"}, 'pip install "numpy<2.4"'),
    ],
)
def test_a_missing_or_broken_extra_is_one_line(versions, says, lora_run, tmp_path, capsys, monkeypatch):
    import importlib.metadata as md

    def version(name):
        if versions.get(name, "x") is None:
            raise md.PackageNotFoundError(name)
        return versions.get(name) or md.version(name)

    monkeypatch.setattr(md, "version", version)
    line = one_error_line(capsys, "--adapters", str(lora_run), "--out", str(tmp_path / "o"))
    assert says in line, line


def test_export_lists_coreml(capsys):
    cli(["export", "--help"])
    assert "coreml" in capsys.readouterr().out


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_simulated_rounding_equals_coremltools_own(quant):
    """fake_quantize_ rounds as coremltools' linear_quantize_weights does (its own quantize_weight,
    symmetric, per output channel / per block of 32), zero rows included."""
    from coremltools.optimize._utils import quantize_weight

    torch.manual_seed(0)
    w = torch.randn(48, 64) * torch.rand(48, 1)
    w[3] = 0  # a zero row: scale 0, must stay 0
    w16 = w.half().float()
    ours = coreml_wrapper._rounded(w16, coreml_wrapper.QUANT_LEVELS[quant], quant == "int4")
    arr = w.half().numpy()  # coremltools quantizes the fp16 weights
    blocks = arr.reshape(48, 2, 32) if quant == "int4" else arr.reshape(48, 1, 64)
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        q, scale, _ = quantize_weight(blocks, axes=(2,), nbits=8 if quant == "int8" else 4, signed=True,
                                      quantization_mode="LINEAR_SYMMETRIC", dtype=np.int8)  # fmt: skip
    scale = scale.astype(np.float32).reshape(*blocks.shape[:2], 1)
    theirs = np.nan_to_num(q.astype(np.float32) * scale).reshape(48, 64)
    assert torch.allclose(ours, torch.from_numpy(theirs), atol=1e-6, rtol=0)
    assert (ours[3] == 0).all() and not torch.equal(ours, w16)


def test_int_exports_report_the_compression_check(quant_exports):
    out, rc, printed = quant_exports["int8"]
    assert rc == 0 and "int8 weights (coremltools' rounding, simulated in torch)" in printed, printed
    check = json.loads((out / "export_info.json").read_text())["compression_check"]
    assert check["positions"] > 100 and 0 < check["max_abs_dlogit"] and check["argmax_agreement"] <= 1
