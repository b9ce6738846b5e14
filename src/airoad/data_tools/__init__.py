"""Data tools: `airoad data <tool>` (see docs/data_tools.md).

- ``stats``: rows, formats, roles, turns, token lengths, truncation and duplicates of a JSONL file.
- ``markdown-slice``: a seeded subset whose plain-prose answers are rewritten into Markdown structure.
- ``neg-guard``: a small ChatML set whose prompts bait chat-format artifacts and whose answers are clean.
- ``mix``: weighted, optionally deduplicated and shuffled mixture of several JSONL files.

Every tool validates its inputs with the training checks (:func:`airoad.core.data.chat_data.read_rows`), writes
through :mod:`airoad.core.base.io`'s atomic writers, never replaces an existing ``--out`` without
``--overwrite`` and never writes to an input file. Nothing here imports torch at ``--help``.
"""
