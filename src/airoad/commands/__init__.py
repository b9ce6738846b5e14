"""The commands, one module each: ``airoad NAME`` is ``airoad/commands/NAME.py`` and ``airoad GROUP
TOOL`` is ``airoad/commands/GROUP_TOOL.py`` (dashes as underscores). Each module holds one
``COMMAND`` (:class:`airoad.core.base.commands.Command`): the options schema, the function that does
the work and a one-line summary; the core (:mod:`airoad.core.run.command`) does the rest. Nothing
here imports torch, so ``airoad <command> --help`` loads none."""
