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

from airoad.core.model.loading import LoadError, first_line, safetensors_problem

RUN_CONFIG = "run_config.yaml"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class Source:
    """Resolved inputs. ``base_from`` says where ``base`` came from (for messages)."""

    base: str
    base_from: str
    adapters: Path | None = None
    system_prompt: str | None = None  # the run's system_prompt (run_config.yaml), if any
    tokenizer_from: str = ""
    adapter_config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

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
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise LoadError(f"{path}: unreadable ({first_line(e)}); fix it or pass --base") from None
    return data if isinstance(data, dict) else {}


def check_adapter_dir(path: str | Path, flag: str = "--adapters") -> dict[str, Any]:
    """Validate a PEFT adapter dir; returns its adapter_config.json. LoadError (one line) if unusable."""
    p = Path(path)
    if not p.exists():
        raise LoadError(f"{flag} {p}: no such directory; give a run's output_dir or a PEFT adapter dir")
    if not p.is_dir():
        raise LoadError(f"{flag} {p}: is a file; give the directory holding {ADAPTER_CONFIG}")
    if not (p / ADAPTER_CONFIG).is_file():
        hint = " (a full or merged checkpoint: pass it as --base)" if (p / "config.json").is_file() else ""
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
    return config


def adapter_config_problem(config: dict[str, Any]) -> str | None:
    """The first key of a LoRA/DoRA adapter_config.json with a value PEFT cannot use, or None."""
    checks = {
        "r": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "lora_alpha": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
        "lora_dropout": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1,
        "use_dora": lambda v: isinstance(v, bool),
        "target_modules": lambda v: (
            v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        ),
    }
    for key, ok in checks.items():
        if key in config and not ok(config[key]):
            return f"`{key}` is {config[key]!r}, which a LoRA adapter cannot have"
    return None


def _check_base(base: str, base_from: str) -> None:
    """A local base must be a model dir; anything else is taken as a hub id (checked when loading)."""
    p = Path(base).expanduser()
    if p.exists():
        if not (p.is_dir() and (p / "config.json").is_file()):
            raise LoadError(f"base model {base!r} (from {base_from}): not a model directory (no config.json)")
    elif base.startswith(("/", "./", "../", "~")) or base.count("/") > 1:
        raise LoadError(
            f"base model {base!r} (from {base_from}): no such directory; pass --base DIR_OR_HUB_ID"
        )


def resolve_source(base: str | None, adapters: str | None, flag: str = "--adapters") -> Source:
    """Work out base, adapters, system prompt and tokenizer source. No torch, no weights.
    ``flag`` names the adapter option in messages (``--adapters``; a lane's ``init_adapter``)."""
    if not adapters:
        if not base:
            raise LoadError("give --adapters (a run's output_dir) and/or --base (a model)")
        _check_base(base, "--base")
        return Source(base=base, base_from="--base", tokenizer_from=base)
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
        base_from = "--base"
        if recorded and recorded[0][0] != base:
            notes.append(f"note: --base {base} overrides {recorded[0][0]} recorded in {recorded[0][1]}")
    elif recorded:
        base, base_from = recorded[0]
    else:
        raise LoadError(
            f"{flag} {adir}: names no base model (no {RUN_CONFIG} base_model, no base_model_name_or_path "
            f"in {ADAPTER_CONFIG}); pass --base"
        )
    _check_base(base, base_from)
    if why := safetensors_problem(adir / ADAPTER_WEIGHTS):  # after the config: what it names comes first
        raise LoadError(f"{flag} {adir / ADAPTER_WEIGHTS}: {why}; train again or restore the file")
    has_tok = (adir / "tokenizer_config.json").is_file()
    return Source(
        base=base,
        base_from=base_from,
        adapters=adir,
        system_prompt=run.get("system_prompt") or None,
        tokenizer_from=str(adir) if has_tok else base,
        adapter_config=acfg,
        notes=notes,
    )
