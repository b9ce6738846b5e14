"""`airoad data markdown-slice --dataset_path FILE --out FILE [--limit N]`"""

from airoad.core.base.commands import Command
from airoad.core.base.errors import problems_of
from airoad.core.data.chat_data import read_rows
from airoad.data_tools.markdown_slice import SliceConfig, run

COMMAND = Command(
    SliceConfig,
    run,
    "seeded subset with plain answers rewritten into Markdown (heading, lists)",
    check=lambda cfg: problems_of(read_rows, cfg.dataset_path or ""),
)
