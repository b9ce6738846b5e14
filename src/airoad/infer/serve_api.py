"""The OpenAI chat-completions contract of `airoad serve`, without a server: a request body checked
into a :class:`Request` or refused as a :class:`RequestError`, and the response bodies and stream
chunks built the way OpenAI's API shapes them (``openai`` parses them as its own).

Refusals are HTTP 400 with ``{"error": {"message", "type": "invalid_request_error", "param",
"code"}}``: a body that is not JSON or not an object, an unknown model (code
``model_not_found``), no messages, a role other than system/user/assistant, a system turn after
the first, a conversation that does not end with a user turn, a value of the wrong type or out of
range, ``n`` other than 1, tools, and a prompt plus ``max_tokens`` beyond the model's context
(``context_length_exceeded``). Fields OpenAI defines that do not change an answer here (``user``,
``stream_options``, zero penalties) are accepted; a request can name no file or path.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant")
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logit_bias", "logprobs", "top_logprobs")
MAX_STOPS = 4  # as OpenAI's API


class RequestError(Exception):
    """A refused request: the HTTP status and OpenAI's error object."""

    def __init__(self, message: str, code: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.status = status
        self.body = error_body(message, code, param)


def error_body(
    message: str, code: str, param: str | None = None, kind: str = "invalid_request_error"
) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class Request:
    """A checked chat completion request. ``messages`` start with the system turn to use (the
    request's, else the server's default, if any); ``max_tokens`` is resolved."""

    model: str
    messages: list[dict[str, str]]
    stream: bool
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    prompt_tokens: int


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(f"the body is not JSON ({e}); send one JSON object", "invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object", "invalid_json")
    return body


def text_of(content: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise RequestError(
        f"{where}.content must be a string (or text parts); this model reads text only",
        "invalid_content",
        where,
    )


def check_messages(value: Any, default_system: str | None) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RequestError(
            "messages must be a non-empty list of {role, content} objects", "invalid_messages", "messages"
        )
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with role and content", "invalid_messages", where)
        role = m.get("role")
        if role not in ROLES:
            raise RequestError(
                f"{where}.role {role!r} is not one of {', '.join(ROLES)}", "invalid_role", f"{where}.role"
            )
        if role == "system" and i > 0:
            raise RequestError(f"{where}: a system turn comes first", "invalid_role", f"{where}.role")
        out.append({"role": role, "content": text_of(m.get("content"), where)})
    if out[-1]["role"] != "user":
        raise RequestError(
            "the last message must be a user turn (the one to answer)", "invalid_role", "messages"
        )
    if out[0]["role"] != "system" and default_system:
        out.insert(0, {"role": "system", "content": default_system})
    return out


def number(body: dict, key: str, default: float, low: float, high: float, *, integer: bool = False) -> Any:
    """``body[key]`` checked to be a number (an integer if ``integer``) in [low, high]; default if absent/null."""
    value = body.get(key)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise RequestError(f"{key} must be {'an integer' if integer else 'a number'}", "invalid_value", key)
    if not low <= value <= high:
        raise RequestError(f"{key} = {value} is out of range [{low}, {high}]", "invalid_value", key)
    return value


def check_stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return ()
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > MAX_STOPS
    ):
        raise RequestError(
            f"stop must be a non-empty string or a list of up to {MAX_STOPS} of them", "invalid_value", "stop"
        )
    return tuple(stops)


def check_request(body: dict[str, Any], server: Any) -> Request:
    """``body`` as a :class:`Request`, or RequestError. ``server``: ``models`` (the sides),
    ``system`` (default system turn), ``max_new_tokens`` (default answer budget), ``context`` (the
    model's), ``count_tokens(messages)`` and ``temperature``/``top_p`` defaults."""
    model = body.get("model")
    if not isinstance(model, str) or model not in server.models:
        shown = f"`{model}`" if isinstance(model, str) else "given"
        raise RequestError(
            f"The model {shown} does not exist here; this server has {', '.join(server.models)}",
            "model_not_found",
            "model",
        )
    for key in UNSUPPORTED:
        if body.get(key) not in (None, False, [], {}):
            raise RequestError(f"{key} is not supported by airoad serve", "unsupported", key)
    number(body, "n", 1, 1, 1, integer=True)  # one answer per request
    for key in ("presence_penalty", "frequency_penalty"):
        if number(body, key, 0, -2, 2) != 0:
            raise RequestError(f"{key} is not supported (only 0)", "unsupported", key)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false", "invalid_value", "stream")
    messages = check_messages(body.get("messages"), server.system)
    prompt_tokens = server.count_tokens(messages)
    room = server.context - prompt_tokens
    if room < 1:
        raise RequestError(
            f"the prompt is {prompt_tokens} tokens; this model's context is {server.context}",
            "context_length_exceeded",
            "messages",
        )
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = number(body, key, min(server.max_new_tokens, room), 1, 2**31, integer=True)
    if max_tokens > room:
        raise RequestError(
            f"{key} = {max_tokens} plus the prompt's {prompt_tokens} tokens exceeds this model's context "
            f"of {server.context}; ask for at most {room}",
            "context_length_exceeded",
            key,
        )
    return Request(
        model=model,
        messages=messages,
        stream=stream,
        max_tokens=max_tokens,
        temperature=float(number(body, "temperature", server.temperature, 0, 2)),
        top_p=float(number(body, "top_p", server.top_p, 1e-6, 1)),
        seed=number(body, "seed", None, -(2**63), 2**63 - 1, integer=True),
        stop=check_stop(body.get("stop")),
        prompt_tokens=prompt_tokens,
    )


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion(
    cid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict:
    """A non-streamed chat completion body."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": openai_finish(finish),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chunk(cid: str, model: str, delta: dict[str, str], finish: str | None = None) -> str:
    """One server-sent event of a streamed completion."""
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": openai_finish(finish) if finish else None}],
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def openai_finish(finish: str) -> str:
    """OpenAI's finish_reason: "stop" or "length" (an answer cut from outside was cut short)."""
    return "stop" if finish == "stop" else "length"
