"""`airoad data pairs --dataset_path FILE --adapters RUN_DIR --out FILE [--n N]`"""

from airoad.core.base.commands import Command
from airoad.core.base.errors import problems_of
from airoad.core.data.chat_data import read_rows
from airoad.infer.pairs import run
from airoad.infer.schema import PairsConfig

COMMAND = Command(
    PairsConfig,
    run,
    "preference pairs: the data's last answer chosen, the model's own answer rejected",
    check=lambda cfg: problems_of(read_rows, cfg.dataset_path or ""),
)
