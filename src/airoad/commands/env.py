"""`airoad env [--json]`"""

from airoad.core.base.commands import Command
from airoad.env_cmd import EnvConfig, run

COMMAND = Command(EnvConfig, run, "print library versions, devices and the device/dtype a run would use")
