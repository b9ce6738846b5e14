"""The coremltools side of `airoad export coreml`: a traced :class:`~airoad.export.coreml_wrapper.
StatefulLM` converted to an ML program with the KV cache as state, weights optionally compressed,
one function per context length in one multifunction package, and the package's spec read back.

Why one multifunction package: a Core ML state has a fixed shape (no flexible dimensions), so each
context length needs its own program. ``coremltools.utils.save_multifunction`` stores the weights
the functions share once, and each function allocates only its own state when loaded
(``MLModelConfiguration.functionName``), so one file serves every length and an app that picks
2k does not pay for a 4k cache. One package per length would store the weights once per length;
one state of the largest length would make every app pay for the largest cache.

Works with coremltools 9.0 on torch 2.13 (upstream tests up to torch 2.7), provided numpy < 2.4:
coremltools 9.0 calls ``int()`` on 1-element arrays, which numpy 2.4 made an error
(apple/coremltools#2633, fixed after 9.0 by #2632). :func:`require_coremltools` says so in one line.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import io
import logging
from pathlib import Path
from typing import Any

from airoad.core.base.errors import UserError

INPUTS = ("inputIds", "causalMask")
OUTPUT = "logits"
STATES = ("keyCache", "valueCache")
INSTALL = 'pip install -e ".[export]"'


def require_coremltools() -> None:
    """UserError naming the fix when coremltools is missing or cannot convert with this numpy."""

    try:
        ct_version = md.version("coremltools")
    except md.PackageNotFoundError:
        raise UserError(
            f"the coremltools package is not installed; {INSTALL} (or pip install coremltools)"
        ) from None
    np_version = md.version("numpy")
    if _release(ct_version) <= (9, 0) and _release(np_version) >= (2, 4):
        raise UserError(
            f"coremltools {ct_version} cannot convert with numpy {np_version} (apple/coremltools#2633); "
            f'pip install "numpy<2.4" ({INSTALL} pins it)'
        )


def _release(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def import_coremltools() -> Any:
    """coremltools, imported without its Linux noise (proxy-library and torch-version lines)."""
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        import coremltools as ct
    for name in ("coremltools", "coremltools.converters"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ct


def convert(traced: Any, context: int, cache_shape: tuple[int, ...]) -> Any:
    """The traced wrapper as an iOS 18 / macOS 15 ML program (fp16 compute): ``inputIds`` int32
    [1, 1..context], ``causalMask`` float32 [1, 1, q, 1..context] (q as inputIds), ``logits``
    float32 [1, 1, vocab], states ``keyCache``/``valueCache`` float16 ``cache_shape``. Float32 I/O
    so a caller needs no Float16 type (not on Intel Macs); the casts are two ops per call."""
    import numpy as np

    ct = import_coremltools()
    q = ct.RangeDim(lower_bound=1, upper_bound=context, default=1, symbol="query")
    end = ct.RangeDim(lower_bound=1, upper_bound=context, default=1, symbol="end")
    state = ct.TensorType(shape=cache_shape, dtype=np.float16)
    with _quiet():
        return ct.convert(
            traced,
            inputs=[
                ct.TensorType(shape=(1, q), dtype=np.int32, name=INPUTS[0]),
                ct.TensorType(shape=(1, 1, q, end), dtype=np.float32, name=INPUTS[1]),
            ],
            outputs=[ct.TensorType(dtype=np.float32, name=OUTPUT)],
            states=[ct.StateType(wrapped_type=state, name=n) for n in STATES],
            minimum_deployment_target=ct.target.iOS18,
            compute_precision=ct.precision.FLOAT16,
            skip_model_load=True,  # loading compiles the model: macOS only
        )


@contextlib.contextmanager
def _quiet() -> Any:
    """coremltools' progress bars and notes go to stderr/stdout: keep them out of our output."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def compress(mlmodel: Any, quant: str) -> Any:
    """Weights of ``mlmodel`` as ``quant``: fp16 unchanged; int8 per-channel symmetric linear;
    int4 symmetric linear per block of 32 input channels (iOS 18's block-wise format)."""
    if quant == "fp16":
        return mlmodel
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
    )

    if quant == "int8":
        op = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    else:
        op = OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32
        )
    with _quiet():
        return linear_quantize_weights(mlmodel, OptimizationConfig(global_config=op))


def function_name(context: int) -> str:
    return f"ctx_{context}"


def save_package(parts: dict[int, Path], out: Path, metadata: dict[str, str], scratch: Path) -> None:
    """One ``.mlpackage`` at ``out`` from single-function packages ``{context: path}``: a function
    ``ctx_N`` each (the largest the default), weights deduplicated; ``metadata`` as the package's
    user-defined metadata. ``scratch``: a directory for the joined package before the metadata."""
    ct = import_coremltools()
    desc = ct.utils.MultiFunctionDescriptor()
    for context, path in sorted(parts.items()):
        desc.add_function(str(path), src_function_name="main", target_function_name=function_name(context))
    desc.default_function_name = function_name(max(parts))
    joined = scratch / "joined.mlpackage"
    with _quiet():
        ct.utils.save_multifunction(desc, str(joined))
        model = ct.models.MLModel(str(joined), skip_model_load=True)
    model.user_defined_metadata.update(metadata)
    model.author = "airoad"
    model.short_description = metadata.get("airoad.description", "")
    with _quiet():
        model.save(str(out))


def read_spec(package: Path) -> dict[str, Any]:
    """What the package declares, read from its spec (no model load, so on Linux too): per function
    its inputs/outputs (dtype, shape bounds), states (dtype, shape) and write_state op count; the
    default function; the user-defined metadata."""
    ct = import_coremltools()
    with _quiet():
        spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    functions = {}
    for f in spec.description.functions:
        block = spec.mlProgram.functions[f.name]
        ops = block.block_specializations[block.opset].operations
        functions[f.name] = {
            "inputs": {i.name: _array(i.type.multiArrayType) for i in f.input},
            "outputs": {o.name: _array(o.type.multiArrayType) for o in f.output},
            "states": {s.name: _array(s.type.stateType.arrayType) for s in f.state},
            "write_state_ops": sum(op.type == "write_state" for op in ops),
        }
    return {
        "functions": functions,
        "default_function": spec.description.defaultFunctionName,
        "metadata": dict(spec.description.metadata.userDefined),
        "spec_version": spec.specificationVersion,
    }


def _array(t: Any) -> dict[str, Any]:
    """dtype name and [lower, upper] bounds per dimension of a multiArrayType."""
    from coremltools.proto import FeatureTypes_pb2

    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(t.dataType)
    ranges = [[r.lowerBound, r.upperBound] for r in t.shapeRange.sizeRanges]
    return {"dtype": dtype, "shape": ranges or [[d, d] for d in t.shape]}


def spec_problems(spec: dict[str, Any], promised: dict[int, tuple[int, ...]], layers: int) -> list[str]:
    """Where the package's spec differs from what the export promises: a function per context,
    the two inputs, the logits output and both states of the promised shape, each written once per
    layer per call. [] when it is all there."""
    problems = []
    for context, shape in promised.items():
        f = spec["functions"].get(function_name(context))
        if f is None:
            problems.append(f"function {function_name(context)} missing")
            continue
        want_in = {INPUTS[0]: ("INT32", [[1, 1], [1, context]]),
                   INPUTS[1]: ("FLOAT32", [[1, 1], [1, 1], [1, context], [1, context]])}  # fmt: skip
        for name, (dtype, bounds) in want_in.items():
            got = f["inputs"].get(name)
            if got != {"dtype": dtype, "shape": bounds}:
                problems.append(f"{function_name(context)} input {name}: {got}, want {dtype} {bounds}")
        if f["outputs"].get(OUTPUT, {}).get("dtype") != "FLOAT32":
            problems.append(f"{function_name(context)}: no float32 output {OUTPUT} ({f['outputs']})")
        for name in STATES:
            got = f["states"].get(name)
            if got != {"dtype": "FLOAT16", "shape": [[d, d] for d in shape]}:
                problems.append(f"{function_name(context)} state {name}: {got}, want FLOAT16 {list(shape)}")
        if f["write_state_ops"] != 2 * layers:
            problems.append(
                f"{function_name(context)}: {f['write_state_ops']} state writes, want {2 * layers}"
            )
    return problems
