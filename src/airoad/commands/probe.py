"""`airoad probe --config TRAIN.yaml [--set KEY=VALUE ...]`: --config is the train YAML it runs."""

from airoad.core.base.commands import Command
from airoad.probe.run import run
from airoad.probe.schema import ProbeConfig

COMMAND = Command(
    ProbeConfig,
    run,
    "train, then compare + style eval (base vs tuned, drift); one probe_report.md to decide from",
)
