"""`airoad merge --adapters RUN_DIR --out DIR`"""

from airoad.core.base.commands import Command
from airoad.infer.merge import run
from airoad.infer.schema import MergeConfig

COMMAND = Command(
    MergeConfig,
    run,
    "merge an adapter into its base: a plain transformers checkpoint",
    writer="airoad merge",
)
