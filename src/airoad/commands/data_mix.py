"""`airoad data mix --inputs a.jsonl:3 b.jsonl:1 --out FILE [--shuffle] [--dedupe]`"""

from airoad.core.base.commands import Command
from airoad.core.base.errors import problems_of
from airoad.data_tools.mix import MixConfig, build_mix, input_paths, run

COMMAND = Command(
    MixConfig,
    run,
    "weighted mix of JSONL files (PATH:WEIGHT), optional dedupe and shuffle",
    inputs=input_paths,
    check=lambda cfg: problems_of(build_mix, cfg),
)
