"""`airoad export mlx --adapters RUN_DIR --out DIR [--fuse] [--quant none|4bit|8bit]`"""

from airoad.core.base.commands import Command
from airoad.export.mlx_run import run
from airoad.export.schema import MlxConfig

COMMAND = Command(
    MlxConfig,
    run,
    "an mlx-lm adapter folder (or, --fuse, an MLX model), loaded and checked by mlx-lm itself",
    writer="airoad export mlx",
)
