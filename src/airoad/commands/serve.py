"""`airoad serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--api_key KEY]`"""

from airoad.core.base.commands import Command, positional
from airoad.infer.schema import ServeConfig
from airoad.infer.serve import run

COMMAND = Command(
    ServeConfig,
    run,
    "an OpenAI-compatible API (tuned and base from one model) and a side-by-side page",
    argv=positional("adapters"),
)
