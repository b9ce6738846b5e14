"""`airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml [--KEY VALUE ...]`"""

from airoad.core.base.commands import Command
from airoad.sft.run import run
from airoad.sft.schema import TrainConfig

COMMAND = Command(
    TrainConfig,
    run,
    "fine-tune a chat model with LoRA/DoRA (+KL) from a YAML config",
    writer="airoad train",
)
