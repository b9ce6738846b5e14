"""A trained adapter's directory, read without torch: its config, weights header, the base it was
trained on, its run's system prompt and tokenizer. Shared by the inference tools (``--adapters``)
and the lanes that start from a trained adapter (``init_adapter``).

Base model, first found: the caller's ``base``; the run's ``run_config.yaml`` (``base_model``);
``adapter_config.json`` (``base_model_name_or_path``). Tokenizer: the adapter dir's when it has
one (a run saves the tokenizer it trained with), else the base's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airoad.core.model.loading import LoadError, first_line, safetensors_header, safetensors_problem

RUN_CONFIG = "run_config.yaml"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# the run's data files (run_config.yaml): inputs of every command that reads the run, never written
RUN_DATA_KEYS = ("dataset_path", "dev_path", "kl_anchor_path")


@dataclass
class Source:
    """Resolved inputs. ``base_from`` says where ``base`` came from (for messages)."""

    base: str
    base_from: str
    adapters: Path | None = None
    system_prompt: str | None = None  # the run's system_prompt (run_config.yaml), if any
    dev_path: str | None = None  # the run's dev set (run_config.yaml dev_path), if that file is here
    data_files: list[tuple[str, str]] = field(default_factory=list)  # (key, path): the run's data
    tokenizer_from: str = ""
    adapter_config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    adapter_flag: str = "--adapters"  # the option that named the adapter dir, for messages

    @property
    def adapter_kind(self) -> str:
        """'DoRA r=16' / 'LoRA r=8' for messages; '' without adapters."""
        if not self.adapters:
            return ""
        kind = "DoRA" if self.adapter_config.get("use_dora") else "LoRA"
        return f"{kind} r={self.adapter_config.get('r', '?')}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"{path}: unreadable ({e}); re-save the adapter") from None
    if not isinstance(data, dict):
        raise LoadError(f"{path}: not a JSON object; re-save the adapter")
    return data


def _read_run_config(path: Path) -> dict[str, Any]:

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise LoadError(f"{path}: unreadable ({first_line(e)}); fix it or pass --base_model") from None
    return data if isinstance(data, dict) else {}


def check_adapter_dir(path: str | Path, flag: str = "--adapters") -> dict[str, Any]:
    """Validate a PEFT adapter dir; returns its adapter_config.json. LoadError (one line) if unusable."""
    p = Path(path)
    if not p.exists():
        raise LoadError(f"{flag} {p}: no such directory; give a run's output_dir or a PEFT adapter dir")
    if not p.is_dir():
        raise LoadError(f"{flag} {p}: is a file; give the directory holding {ADAPTER_CONFIG}")
    if not (p / ADAPTER_CONFIG).is_file():
        hint = (
            " (a full or merged checkpoint: pass it as --base_model)" if (p / "config.json").is_file() else ""
        )
        raise LoadError(
            f"{flag} {p}: no {ADAPTER_CONFIG} (a run writes it when training ends); "
            f"give a finished run's output_dir{hint}"
        )
    if not (p / ADAPTER_WEIGHTS).is_file():
        why = (
            "only safetensors are loaded (a pickled adapter_model.bin can run code); "
            "re-save it with save_pretrained(safe_serialization=True)"
            if (p / "adapter_model.bin").is_file()
            else "the adapter weights are missing"
        )
        raise LoadError(f"{flag} {p}: no {ADAPTER_WEIGHTS}; {why}")
    config = _read_json(p / ADAPTER_CONFIG)
    if bad := adapter_config_problem(config):
        raise LoadError(f"{flag} {p / ADAPTER_CONFIG}: {bad}; restore the file the run wrote")
    if (why := safetensors_problem(p / ADAPTER_WEIGHTS)) is None and (
        bad := adapter_tensor_problem(config, safetensors_header(p / ADAPTER_WEIGHTS))
    ):
        raise LoadError(f"{flag} {p}: {bad}; restore the files the run wrote")
    return config


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _positive_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def adapter_config_problem(config: dict[str, Any]) -> str | None:
    """The first key of a LoRA/DoRA adapter_config.json with a value PEFT cannot use (or one that
    asks for what airoad does not load: another PEFT method), or None."""
    checks = {
        "peft_type": lambda v: v == "LORA",
        "r": _positive_int,
        "lora_alpha": _positive_number,
        "lora_dropout": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1,
        "use_dora": lambda v: isinstance(v, bool),
        "use_rslora": lambda v: isinstance(v, bool),
        "target_modules": lambda v: (
            v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        ),
        "rank_pattern": lambda v: v is None or (isinstance(v, dict) and all(map(_positive_int, v.values()))),
        "alpha_pattern": lambda v: (
            v is None or (isinstance(v, dict) and all(map(_positive_number, v.values())))
        ),
        "modules_to_save": lambda v: (
            v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        ),
    }
    for key, ok in checks.items():
        if key in config and not ok(config[key]):
            if key == "peft_type":
                return f"`peft_type` is {config[key]!r}; airoad loads LoRA and DoRA adapters (peft_type LORA) only"
            return f"`{key}` is {config[key]!r}, which a LoRA adapter cannot have"
    return None


def adapter_tensor_problem(config: dict[str, Any], header: dict[str, Any]) -> str | None:
    """What the weights file says against its config, or None: every lora_A/lora_B pair present
    with the config's rank (``rank_pattern`` included), and DoRA's magnitude vectors present
    exactly when ``use_dora`` is true (a DoRA adapter loaded as LoRA silently drops them)."""
    shapes = {k: v.get("shape") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    modules = sorted({k.rsplit(".lora_A.", 1)[0] for k in shapes if ".lora_A." in k})
    magnitudes = [k for k in shapes if "lora_magnitude_vector" in k]
    dora = config.get("use_dora", False)
    if not modules:
        return "its weights hold no LoRA tensors (lora_A/lora_B); give a LoRA or DoRA adapter"
    if magnitudes and not dora:
        return (
            f"its weights hold {len(magnitudes)} DoRA magnitude vectors but adapter_config.json says "
            "`use_dora: false`: loaded as LoRA they would be dropped"
        )
    if dora and not magnitudes:
        return "adapter_config.json says `use_dora: true` but its weights hold no DoRA magnitude vector"
    # PEFT matches rank_pattern keys as regexes: a module's rank is r or one of the pattern's
    ranks = {config.get("r"), *(config.get("rank_pattern") or {}).values()} - {None}
    for module in modules:
        a, b = shapes.get(f"{module}.lora_A.weight"), shapes.get(f"{module}.lora_B.weight")
        if not (isinstance(a, list) and isinstance(b, list) and len(a) == 2 and len(b) == 2):
            return f"{module}: lora_A/lora_B missing or not matrices in its weights"
        if a[0] != b[1] or (ranks and a[0] not in ranks):
            said = ", ".join(map(str, sorted(ranks)))
            return f"{module}: lora_A {a} and lora_B {b} do not have the rank adapter_config.json gives (r: {said})"
    return None


def check_base_path(base: str, base_from: str, base_flag: str = "--base_model") -> None:
    """A local base must be a model dir; anything else is taken as a hub id (checked when loading)."""
    p = Path(base).expanduser()
    if p.exists():
        if not (p.is_dir() and (p / "config.json").is_file()):
            raise LoadError(f"base model {base!r} (from {base_from}): not a model directory (no config.json)")
    elif base.startswith(("/", "./", "../", "~")) or base.count("/") > 1:
        raise LoadError(
            f"base model {base!r} (from {base_from}): no such directory; pass {base_flag} DIR_OR_HUB_ID"
        )


def resolve_source(
    base: str | None, adapters: str | None, flag: str = "--adapters", base_flag: str = "--base_model"
) -> Source:
    """Work out base, adapters, system prompt and tokenizer source. No torch, no weights.
    ``flag`` and ``base_flag`` name the options in messages (``--adapters``/``--base_model``; a lane's
    ``--init_adapter``/``--base_model``)."""
    if not adapters:
        if not base:
            raise LoadError(f"give {flag} (a run's output_dir) and/or {base_flag} (a model)")
        check_base_path(base, base_flag, base_flag)
        return Source(base=base, base_from=base_flag, tokenizer_from=base)
    adir = Path(adapters)
    acfg = check_adapter_dir(adir, flag)
    run = _read_run_config(adir / RUN_CONFIG) if (adir / RUN_CONFIG).is_file() else {}
    recorded = [
        (run.get("base_model"), str(adir / RUN_CONFIG)),
        (acfg.get("base_model_name_or_path"), str(adir / ADAPTER_CONFIG)),
    ]
    recorded = [(str(b), where) for b, where in recorded if b]
    notes = []
    if base:
        base_from = base_flag
        if recorded and recorded[0][0] != base:
            notes.append(f"note: {base_flag} {base} overrides {recorded[0][0]} recorded in {recorded[0][1]}")
    elif recorded:
        base, base_from = recorded[0]
    else:
        raise LoadError(
            f"{flag} {adir}: names no base model (no {RUN_CONFIG} base_model, no base_model_name_or_path "
            f"in {ADAPTER_CONFIG}); pass {base_flag}"
        )
    check_base_path(base, base_from, base_flag)
    if why := safetensors_problem(adir / ADAPTER_WEIGHTS):  # after the config: what it names comes first
        raise LoadError(f"{flag} {adir / ADAPTER_WEIGHTS}: {why}; train again or restore the file")
    has_tok = (adir / "tokenizer_config.json").is_file()
    dev = run.get("dev_path") if isinstance(run.get("dev_path"), str) else None
    dev_here = bool(dev) and Path(dev).is_file()
    if dev and not dev_here:
        notes.append(f"note: the run's dev_path {dev} ({adir / RUN_CONFIG}) is not found from here")
    return Source(
        base=base,
        base_from=base_from,
        adapters=adir,
        system_prompt=run.get("system_prompt") or None,
        dev_path=dev if dev_here else None,
        data_files=[(k, run[k]) for k in RUN_DATA_KEYS if isinstance(run.get(k), str) and run[k]],
        tokenizer_from=str(adir) if has_tok else base,
        adapter_config=acfg,
        notes=notes,
        adapter_flag=flag,
    )
