"""`airoad data neg-guard --out FILE [--n N]`"""

from airoad.core.base.commands import Command
from airoad.core.base.errors import problems_of
from airoad.core.data.text_checks import load_banned
from airoad.data_tools.neg_guard import NegGuardConfig, run

COMMAND = Command(
    NegGuardConfig,
    run,
    "ChatML set baiting chat-tag artifacts, with clean answers",
    check=lambda cfg: problems_of(load_banned, cfg.banned) if cfg.banned else [],
)
