"""`airoad pref --config configs/pref/qwen05b_dpo.yaml [--init_adapter RUN_DIR]`"""

from airoad.core.base.commands import Command
from airoad.pref.run import run
from airoad.pref.schema import PrefConfig

COMMAND = Command(
    PrefConfig,
    run,
    "preference-train an adapter (DPO, ORPO, KTO) from a YAML config",
    writer="airoad pref",
)
