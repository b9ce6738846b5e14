"""`airoad compare --adapters RUN_DIR [--prompts FILE] [--out DIR|FILE.md|FILE.json]`"""

from airoad.core.base.commands import Command
from airoad.core.base.errors import problems_of
from airoad.infer.compare import report_outputs, run
from airoad.infer.prompts import load_prompts
from airoad.infer.schema import CompareConfig

COMMAND = Command(
    CompareConfig,
    run,
    "side-by-side answers of base and tuned model",
    outputs=report_outputs,
    check=lambda cfg: problems_of(load_prompts, cfg.prompts, cfg.n, cfg.seed),
)
