"""`airoad data stats FILE [--base_model M] [--json]`"""

from airoad.core.base.commands import Command
from airoad.data_tools.stats import StatsConfig, positional_infile, run

COMMAND = Command(
    StatsConfig,
    run,
    "rows, formats, roles, turns, token lengths, truncation, duplicates",
    argv=positional_infile,
)
