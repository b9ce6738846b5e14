"""Streaming one chat answer at a time, reusing the KV cache of the turns before.

What `airoad chat` (and later `airoad serve`) stand on. transformers' ``generate`` does the
decoding (``TextIteratorStreamer`` hands out the text as it is made); this module adds what a
conversation needs around it:

- **Cache reuse.** A :class:`Turns` holds one side's ``DynamicCache`` and the token ids whose keys
  and values it holds. The next request renders the whole conversation with the chat template; the
  cache is cropped to the longest prefix the new ids share with the cached ones (the template may
  re-tokenize an earlier answer differently, or a retried turn may diverge), and ``generate`` then
  prefills only the rest (it skips positions the cache already holds: transformers' "re-use a
  cache to continue generation", docs/source/en/kv_cache.md). Turn two of a chat costs its own
  tokens, not the whole history.
- **Stopping from outside.** :meth:`Reply.stop` (Ctrl-C in a REPL, a client that hung up) ends
  generation at the next token through a ``StoppingCriteria``; the cache is kept, since every
  position it holds is a real token of the conversation so far.
- **Decoding exactly as asked**, with the stop ids and overrides of
  :func:`airoad.core.model.generate.decoding_config` (the model's own sampling defaults never slip
  in); ``seed`` seeds sampling for the answer.

Contract: ``answer = "".join(reply)`` (= ``reply.text``, cut before the first of ``Decoding.stop``'s
texts, which ends generation); after iteration ``reply.ids`` are the generated token ids (without
the stop token), ``reply.stopped`` says whether a stop token ended it, ``reply.finish_reason`` is
"stop", "length" (``max_new_tokens``) or "cancelled" (:meth:`Reply.stop` from outside), ``reply.prefill_tokens`` how many prompt tokens were
computed (the rest came from the cache), ``reply.first_token_s`` and ``reply.seconds`` its timing.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from airoad.core.model.generate import Messages, decoding_config, encode_prompt, stop_ids
from airoad.core.model.model_parts import causal_lm


@dataclass
class Decoding:
    """How one answer is decoded: greedy at temperature 0, else sampled at it (nucleus ``top_p``)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # texts that end the answer (not part of it), as OpenAI's `stop`


@dataclass
class Turns:
    """One side's KV cache and the ids it holds (``len(ids) == cache.get_seq_length()``)."""

    ids: list[int] = field(default_factory=list)
    cache: Any = None

    def reusable(self, prompt: list[int]) -> int:
        """How many leading ids of ``prompt`` the cache can serve; the cache is cropped to that. At
        least one prompt token is always left to compute (generate needs a position to start from)."""
        if self.cache is None:
            return 0
        n = 0
        limit = min(len(self.ids), len(prompt) - 1)
        while n < limit and self.ids[n] == prompt[n]:
            n += 1
        held = self.cache.get_seq_length()
        if n == 0:
            self.reset()
        elif n < held:
            self.cache.crop(n - held)  # transformers 5: a negative count of positions to drop
        self.ids = self.ids[:n]
        return n

    def reset(self) -> None:
        self.ids, self.cache = [], None


def cache_kwarg(model: Any) -> str:
    """The name generate takes a cache under: ``cache`` in transformers 5 (``past_key_values`` is
    deprecated there), ``past_key_values`` before."""
    forward = inspect.signature(type(causal_lm(model)).forward).parameters
    return "cache" if "cache" in forward else "past_key_values"


class _StopFlag:
    """A transformers StoppingCriteria that reads a threading.Event (set from another thread)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **_: Any) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class Reply:
    """One answer being generated (iterate it for text pieces); see the module docstring."""

    def __init__(
        self, model: Any, tokenizer: Any, messages: Messages, decoding: Decoding, turns: Turns | None
    ):
        from transformers import DynamicCache, StoppingCriteriaList, TextIteratorStreamer

        self.turns = turns if turns is not None else Turns()
        prompt = encode_prompt(tokenizer, messages)
        reused = self.turns.reusable(prompt)
        if self.turns.cache is None:
            self.turns.cache = DynamicCache()
        self.prefill_tokens = len(prompt) - reused
        self.prompt_tokens = len(prompt)
        self._event = threading.Event()
        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = stop_ids(tokenizer, model)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
        gcfg = decoding_config(decoding.max_new_tokens, decoding.temperature, stop, pad)
        if decoding.temperature > 0 and decoding.top_p < 1.0:
            gcfg.top_p = float(decoding.top_p)
        gcfg.return_dict_in_generate = True  # in the config, not beside it (transformers 5 warns)
        device = next(model.parameters()).device
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        self._kwargs = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            generation_config=gcfg,
            **{cache_kwarg(model): self.turns.cache},
            streamer=self._streamer,
            stopping_criteria=StoppingCriteriaList([_StopFlag(self._event)]),
        )
        self._model, self._prompt, self._stop = model, prompt, set(stop)
        self._seed = decoding.seed
        self._stop_texts = tuple(t for t in decoding.stop if t)
        self.ids: list[int] = []
        self.text = ""
        self.stop_text: str | None = None  # the stop text that ended the answer
        self.stopped = False
        self.first_token_s: float | None = None
        self.seconds = 0.0
        self._error: BaseException | None = None

    def _cut_at_stop_texts(self, pieces: Iterator[str]) -> Iterator[str]:
        """The streamed text up to (not including) the first stop text, which stops generation; a
        tail that could begin a stop text is held back until it cannot. ``self.text``: all of it."""
        stops = self._stop_texts
        sent = 0
        for piece in pieces:
            self.text += piece
            hits = [(i, t) for t in stops if (i := self.text.find(t, max(0, sent - len(t)))) >= 0]
            if hits:
                at, self.stop_text = min(hits)
                self.text = self.text[:at]
                self.stop()
                if self.text[sent:]:
                    yield self.text[sent:]
                return
            safe = len(self.text) - held_back(self.text, stops)
            if safe > sent:
                yield self.text[sent:safe]
                sent = safe
        if self.text[sent:]:
            yield self.text[sent:]

    def stop(self) -> None:
        """End generation at the next token (any thread)."""
        self._event.set()

    def _run(self) -> None:
        try:
            with torch.no_grad():
                if self._seed is not None:
                    torch.manual_seed(self._seed)
                out = self._model.generate(**self._kwargs)
            new = out.sequences[0, len(self._prompt) :].tolist()
            cut = next((k for k, t in enumerate(new) if t in self._stop), None)
            self.stopped = cut is not None
            self.ids = new if cut is None else new[:cut]
            held = self.turns.cache.get_seq_length()
            self.turns.ids = (self._prompt + new)[:held]
        except BaseException as e:  # re-raised in the reading thread
            self._error = e
            self.turns.reset()  # a cache of unknown length: start the next turn afresh
            self._streamer.end()

    @property
    def finish_reason(self) -> str:
        """ "stop" (a stop token or a stop text), "length" (max_new_tokens) or "cancelled"."""
        if self.stopped or self.stop_text is not None:
            return "stop"
        return "cancelled" if self._event.is_set() else "length"

    def __iter__(self) -> Iterator[str]:
        started = time.perf_counter()
        worker = threading.Thread(target=self._run, daemon=True)
        worker.start()
        read_all = False
        try:
            for piece in self._cut_at_stop_texts(self._streamer):
                if self.first_token_s is None:
                    self.first_token_s = time.perf_counter() - started
                yield piece
            read_all = True
        finally:
            if not read_all:  # the reader left early (Ctrl-C, a closed connection): stop generating
                self.stop()
            worker.join()
            self.seconds = time.perf_counter() - started
        if self._error is not None:
            raise self._error


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` could begin a stop text (not safe to send yet)."""
    return max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)


def reply(
    model: Any, tokenizer: Any, messages: Messages, decoding: Decoding, turns: Turns | None = None
) -> Reply:
    """Start one answer to ``messages`` (system/user/assistant turns ending with a user turn)."""
    return Reply(model, tokenizer, messages, decoding, turns)
