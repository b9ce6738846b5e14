"""Streaming replies (core/model/stream.py) on the tiny model: the streamed answer is generate()'s,
turn two reuses the cache and answers exactly as a fresh prefill would, and a reply stops from
outside at the next token."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from airoad.core.model.loading import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, load_tokenizer(str(tiny_model_dir))


CHAT = [{"role": "user", "content": "What is 2+2?"}]


def test_a_streamed_greedy_answer_is_generates_answer(tiny):
    from airoad.core.model.generate import generate
    from airoad.core.model.stream import Decoding, reply

    model, tok = tiny
    r = reply(model, tok, CHAT, Decoding(max_new_tokens=12))
    text = "".join(r)
    batch = generate(model, tok, [CHAT], max_new_tokens=12)[0]
    assert r.ids == batch.new_ids[: batch.n_tokens] and len(r.ids) > 0
    assert text == tok.decode(r.ids, skip_special_tokens=True)
    assert r.prefill_tokens == r.prompt_tokens and r.first_token_s is not None and r.seconds > 0


def test_turn_two_prefills_only_its_own_tokens_and_answers_as_a_fresh_prefill(tiny):
    from airoad.core.model.stream import Decoding, Turns, reply

    model, tok = tiny
    turns = Turns()
    first = reply(model, tok, CHAT, Decoding(max_new_tokens=8), turns)
    answer = "".join(first)
    chat = [*CHAT, {"role": "assistant", "content": answer}, {"role": "user", "content": "And 3+3?"}]
    second = reply(model, tok, chat, Decoding(max_new_tokens=8), turns)
    "".join(second)
    assert (
        second.prefill_tokens < second.prompt_tokens - first.prompt_tokens + 2
    )  # the history came from the cache
    fresh = reply(model, tok, chat, Decoding(max_new_tokens=8))
    "".join(fresh)
    assert fresh.prefill_tokens == fresh.prompt_tokens
    assert second.ids == fresh.ids  # reuse changes no token
    # a retried first turn diverges from the cached history: cropped, then exact again
    retry = reply(
        model, tok, [{"role": "user", "content": "What is 5+5?"}], Decoding(max_new_tokens=8), turns
    )
    "".join(retry)
    alone = reply(model, tok, [{"role": "user", "content": "What is 5+5?"}], Decoding(max_new_tokens=8))
    "".join(alone)
    assert retry.ids == alone.ids and retry.prefill_tokens < retry.prompt_tokens


def test_a_reply_stopped_from_outside_ends_at_the_next_token_and_the_chat_goes_on(tiny):
    from airoad.core.model.stream import Decoding, Turns, reply

    model, tok = tiny
    turns = Turns()
    r = reply(model, tok, CHAT, Decoding(max_new_tokens=200), turns)
    pieces = []
    for piece in r:
        pieces.append(piece)
        r.stop()
    assert 0 < len(r.ids) < 200 and not r.stopped and r.finish_reason == "cancelled"
    assert len(turns.ids) == turns.cache.get_seq_length()
    nxt = reply(model, tok, [*CHAT, {"role": "assistant", "content": "".join(pieces)}, {"role": "user", "content": "ok"}],
                Decoding(max_new_tokens=4), turns)  # fmt: skip
    "".join(nxt)
    assert nxt.prefill_tokens < nxt.prompt_tokens


def test_sampling_is_seeded(tiny):
    from airoad.core.model.stream import Decoding, reply

    model, tok = tiny
    runs = [
        "".join(reply(model, tok, CHAT, Decoding(max_new_tokens=10, temperature=1.0, seed=s)))
        for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_a_stop_text_ends_the_answer_before_it_and_is_never_sent(tiny):
    from airoad.core.model.stream import Decoding, held_back, reply

    model, tok = tiny
    full = reply(model, tok, CHAT, Decoding(max_new_tokens=16))
    text = "".join(full)
    assert full.finish_reason in ("stop", "length") and len(text) > 4
    stop = text[3:5]  # a text the greedy answer is known to contain
    cut = reply(model, tok, CHAT, Decoding(max_new_tokens=16, stop=("never there", stop)))
    pieces = list(cut)
    assert "".join(pieces) == cut.text == text[: text.find(stop)]
    assert cut.stop_text == stop and cut.finish_reason == "stop"
    assert held_back("abc <|e", ("<|end|>",)) == 3 and held_back("abc", ("<|end|>",)) == 0
