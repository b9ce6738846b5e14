"""`airoad env`: library versions, devices found, and the device/dtype a run would use.

airoad env [--json]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from airoad.core.base.options import opt


@dataclass
class EnvConfig:
    json: bool = opt(False, "Print one JSON object instead of text.")


def run(cfg: EnvConfig, inv: Any = None) -> None:
    from airoad.core.model.devices import describe

    info = describe()
    if cfg.json:
        print(json.dumps(info, indent=2))
        return
    for pkg, ver in info["versions"].items():
        print(f"{pkg:>13}  {ver}")
    print(f"{'devices':>13}  {', '.join(info['devices'])}")
    print(f"{'cpu threads':>13}  {info['cpu_threads']} (bf16 units: {'yes' if info['cpu_bf16'] else 'no'})")
    forced = f" (AIROAD_CPU_BF16={info['cpu_bf16_forced']})" if info["cpu_bf16_forced"] else ""
    print(f"{'a run uses':>13}  {info['run_device']} / {info['run_dtype']}{forced}")
