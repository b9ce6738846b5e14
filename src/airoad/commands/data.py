"""`airoad data TOOL ...`: the data tools are the modules ``data_TOOL``."""

SUMMARY = "data tools: stats, split, markdown-slice, neg-guard, mix, pairs"
