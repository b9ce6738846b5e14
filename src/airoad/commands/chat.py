"""`airoad chat RUN_DIR [--base_model M] [--temperature T] ...`"""

from airoad.core.base.commands import Command, positional
from airoad.infer.chat import run
from airoad.infer.schema import ChatConfig

COMMAND = Command(
    ChatConfig,
    run,
    "talk to a tune (streaming; /compare with its base, /save a fixed answer as training data)",
    argv=positional("adapters"),
)
