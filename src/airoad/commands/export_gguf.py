"""`airoad export gguf --adapters RUN_DIR --out DIR [--quant q8_0]`"""

from airoad.core.base.commands import Command
from airoad.export.gguf_run import run
from airoad.export.schema import GgufConfig

COMMAND = Command(
    GgufConfig,
    run,
    "one GGUF file (f16, bf16, q8_0) + Ollama Modelfile, read back and checked against the tune",
    writer="airoad export gguf",
)
