"""`airoad eval --adapters RUN_DIR [--prompts FILE] [--expect REGEX] [--out FILE.json]`"""

from airoad.core.base.commands import Command
from airoad.core.base.errors import problems_of
from airoad.core.data.text_checks import load_banned
from airoad.infer.prompts import load_prompts
from airoad.infer.schema import EvalConfig
from airoad.infer.style_eval import run

COMMAND = Command(
    EvalConfig,
    run,
    "style scores (lists, headings, banned tokens, drift) of base vs tuned",
    check=lambda cfg: (
        problems_of(load_banned, cfg.banned) + problems_of(load_prompts, cfg.prompts, cfg.n, cfg.seed)
    ),
)
