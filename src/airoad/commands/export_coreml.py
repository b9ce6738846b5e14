"""`airoad export coreml --adapters RUN_DIR --out DIR [--context 2048,4096] [--quant fp16]`"""

from airoad.core.base.commands import Command
from airoad.export.coreml_run import run
from airoad.export.schema import CoremlConfig

COMMAND = Command(
    CoremlConfig,
    run,
    "one stateful Core ML package (a function per context length), trace checked, spec read back",
    writer="airoad export coreml",
)
