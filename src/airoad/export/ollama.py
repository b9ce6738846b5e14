"""The Ollama ``Modelfile`` written beside a GGUF: the file, the ChatML prompt format in Ollama's
Go-template syntax, the stop tokens and the system prompt the run trained with.

    FROM ./model-q8_0.gguf
    TEMPLATE \"\"\"...ChatML...\"\"\"
    PARAMETER stop "<|im_end|>"
    PARAMETER stop "<|endoftext|>"
    SYSTEM \"\"\"You are terse.\"\"\"
"""

from __future__ import annotations

from typing import Any

from airoad.core.base.errors import UserError

# ChatML for Ollama (Go text/template): an optional system turn, then each message as
# <|im_start|>ROLE\nCONTENT<|im_end|>\n, and an open assistant turn after the last non-assistant
# message (as the Qwen2.5 chat template does with add_generation_prompt).
CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""
STOPS = ("<|im_end|>", "<|endoftext|>")


def template_default_system(tokenizer: Any) -> str | None:
    """The system turn the chat template adds when a conversation has none (Qwen2.5: "You are
    Qwen, created by Alibaba Cloud. ..."), or None when it adds none."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    head = "<|im_start|>system\n"
    if not text.startswith(head) or "<|im_end|>" not in text:
        return None
    return text[len(head) : text.index("<|im_end|>")] or None


# Decode as airoad compare, eval and probe do by default (greedy, no repetition penalty), so what
# Ollama answers is what the tune was judged on; Ollama's own defaults sample (temperature 0.8,
# top_p 0.9, top_k 40, repeat_penalty 1.1: docs.ollama.com "Modelfile", PARAMETER).
SAMPLING = [
    "# greedy, as airoad compare/eval/probe decode by default; raise temperature for varied answers",
    "PARAMETER temperature 0",
    "PARAMETER repeat_penalty 1",
]


def modelfile(gguf_name: str, system: str | None) -> str:
    """The Modelfile text for ``gguf_name`` (a file in the same directory) and ``system`` (None or
    "" writes no SYSTEM line). UserError for a system prompt Ollama's quoting cannot hold."""
    if system and '"""' in system:
        raise UserError(
            'the system prompt contains """, which a Modelfile cannot quote; pass --system_prompt'
        )
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{CHATML_TEMPLATE}"""']
    lines += [f'PARAMETER stop "{s}"' for s in STOPS]
    lines += SAMPLING
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"
