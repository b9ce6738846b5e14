"""`airoad probe`: the fast-probe checklist as one command (train, compare, style eval) and one page,
``probe_report.md``, to decide from. Entry point: :mod:`airoad.probe.run`.

A composite command: it runs the other commands through :func:`airoad.cli.main` (by name, so it
imports no lane) and reads what they wrote; its own modules stand on the core and on the tools'
torch-free parts (prompt files, regex checks, Markdown helpers).
"""
