"""`airoad data split --dataset_path FILE --train_out TRAIN --dev_out DEV [--dev_fraction F | --dev_rows N]`"""

from airoad.core.base.commands import Command
from airoad.data_tools.split import SplitConfig, run, split_problems

COMMAND = Command(
    SplitConfig,
    run,
    "seeded train/dev split; rows with the same prompt stay on one side",
    check=split_problems,
)
