"""`airoad env`: library versions, devices found, and the device/dtype a run would use.

airoad env [--json]
"""

from __future__ import annotations

import json


def main(argv: list[str]) -> int:
    from airoad.core.base.commands import run_guarded
    from airoad.core.base.errors import UserError
    from airoad.core.base.options import closest
    from airoad.core.model.devices import describe

    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0

    def bad_args() -> int:
        def fix(a: str) -> str:
            return "did you mean --json?" if closest(a.lstrip("-"), ["json"]) else "the only option is --json"

        raise UserError([f"airoad env: unknown argument {a!r}; {fix(a)}" for a in argv if a != "--json"])

    if [a for a in argv if a != "--json"]:
        return run_guarded(bad_args)
    info = describe()
    if "--json" in argv:
        print(json.dumps(info, indent=2))
        return 0
    for pkg, ver in info["versions"].items():
        print(f"{pkg:>13}  {ver}")
    print(f"{'devices':>13}  {', '.join(info['devices'])}")
    print(f"{'cpu threads':>13}  {info['cpu_threads']} (bf16 units: {'yes' if info['cpu_bf16'] else 'no'})")
    forced = f" (AIROAD_CPU_BF16={info['cpu_bf16_forced']})" if info["cpu_bf16_forced"] else ""
    print(f"{'a run uses':>13}  {info['run_device']} / {info['run_dtype']}{forced}")
    return 0
