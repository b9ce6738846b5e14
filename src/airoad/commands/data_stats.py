"""`airoad data stats FILE [--base_model M] [--json]`"""

from airoad.core.base.commands import Command, positional
from airoad.data_tools.stats import StatsConfig, run

COMMAND = Command(
    StatsConfig,
    run,
    "rows, formats, roles, turns, token lengths, truncation, duplicates",
    argv=positional("dataset_path"),
)
