"""`airoad probe --config TRAIN.yaml [--set KEY=VALUE ...]`: its own argv (the train YAML, --set)."""

from airoad.core.base.commands import Command
from airoad.probe.run import run

COMMAND = Command(
    None,
    run,
    "train, then compare + style eval (base vs tuned, drift); one probe_report.md to decide from",
)
