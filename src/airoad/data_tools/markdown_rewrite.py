"""Deterministic Markdown restructuring of a plain-prose answer (no model, no randomness).

:func:`restructure` turns an answer into::

    ## <heading derived from the question>

    <lead: the first sentence, or the sentences before the first step>

    - <each following sentence>            (or `1. <step>` when the answer is sequential)

    <closing: a last one-sentence paragraph, when the list keeps two items without it>

Contract: every sentence of the answer appears verbatim in the result, in order, and nothing else
is added but the heading and the list markers. The one exception is inline numbered steps
("1) unplug it, 2) wait" or "Step 1: ..."): their markers become the list numbering and the
separators between them (", and") are dropped. Answers that are code, already structured, a
single sentence or two, or laid out in lines (verse, tables) are returned unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from airoad.core.text_checks import has_heading, has_list, is_code

REWRITTEN, STRUCTURED, CODE, KEPT = "rewritten", "structured", "code", "kept"

_CODE_SPAN = re.compile(r"`[^`\n]*`")
# Punctuation that can end a sentence, closing quotes/brackets, then the whitespace before the next one.
_END = re.compile(r"[.!?]+[\"'”’)\]]*\s+")
_OPENERS = "\"'“‘([`*$£€"
# Words after which a full stop does not end the sentence ("e.g. Python", "Dr. Smith").
_ABBREV = {"e.g", "i.e", "vs", "cf", "mr", "mrs", "ms", "dr", "approx", "fig", "jr", "sr"}
# A sentence that announces a step of a sequence.
_SEQ_WORD = re.compile(
    r"^(?:First(?:ly)?|Second(?:ly)?|Third(?:ly)?|Then|Next|After that|Afterwards|Finally|Lastly)\b"
)
# Inline step markers: "1)", "(1)", "1." or "Step 1:" before whitespace.
_STEP_MARK = re.compile(r"(?:(?<=\s)|^)(?:\((\d{1,2})\)|(\d{1,2})[.)]|[Ss]tep (\d{1,2}):?)(?=\s)")
# Requests whose answer is the text itself, which a list would spoil: stories, verse, rewrites.
_TEXT_REQUEST = re.compile(
    r"^(?:please\s+)?(?:(?:can|could|would) you\s+)?(?:please\s+)?"
    r"(?:write|compose|draft|rewrite|reword|rephrase|paraphrase|translate|proofread|describe|"
    r"make (?:this|it)|tell me a (?:story|joke|poem))\b",
    re.I,
)
_STEP_SEP = re.compile(r"\s*(?:[,;]\s*(?:and|or|then)?|\s(?:and|or|then))\s*$")


@dataclass(frozen=True)
class Unit:
    """A sentence (or an inline step) of the answer: its text, paragraph and whether it is a step."""

    text: str
    para: int
    step: bool = False


def _masked(text: str) -> str:
    """Inline code spans blanked to 'x' (same length), so '.' inside `a.b` never ends a sentence."""
    return _CODE_SPAN.sub(lambda m: "`" + "x" * (len(m.group()) - 2) + "`", text)


def _word_before(text: str, end: int, longest: int = 32) -> str:
    """The non-space run ending at ``end`` (its last ``longest`` characters: enough to tell an
    abbreviation). Walks back from ``end`` only: a regex anchored at the end of ``text[:end]``
    rescanned the text for every sentence, quadratic in the answer's length."""
    start = end
    while start > 0 and end - start < longest and not text[start - 1].isspace():
        start -= 1
    return text[start:end]


def split_sentences(text: str) -> list[str]:
    """Sentences of one paragraph, verbatim (stripped). Splits after . ! ? before a capital, digit or quote."""
    masked = _masked(text)
    cuts = [0]
    for m in _END.finditer(masked):
        nxt = masked[m.end() : m.end() + 1]
        if not nxt or not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS):
            continue
        token = _word_before(masked, m.start())
        if token.lower().lstrip("(\"'“") in _ABBREV or re.fullmatch(r"[A-Z]", token):
            continue  # "e.g. Python", "J. Smith"
        cuts.append(m.end())
    cuts.append(len(text))
    return [text[a:b].strip() for a, b in pairwise(cuts) if text[a:b].strip()]


def _step_markers(text: str) -> list[re.Match]:
    """The first run of inline step markers numbered 1, 2, ... (at least two), else []."""
    run: list[re.Match] = []
    for m in _STEP_MARK.finditer(_masked(text)):
        n = int(next(g for g in m.groups() if g))
        if n == len(run) + 1:
            run.append(m)
        elif n == 1:
            run = [m]
    return run if len(run) >= 2 else []


def paragraph_units(text: str, para: int) -> list[Unit]:
    """A paragraph as units: inline numbered steps split at their markers, other text into sentences."""
    marks = _step_markers(text)
    if not marks:
        return [Unit(s, para, bool(_SEQ_WORD.match(s))) for s in split_sentences(text)]
    units = [Unit(s, para) for s in split_sentences(text[: marks[0].start()])]
    ends = [m.start() for m in marks[1:]] + [len(text)]
    for m, end in zip(marks, ends, strict=True):
        step = text[m.end() : end].strip()
        if end != len(text):
            step = _STEP_SEP.sub("", step)
        units.append(Unit(step, para, True))
    return units


def asks_for_text(question: str) -> bool:
    """True when the question asks for a piece of text (a story, a rewrite, a translation): that text is the answer."""
    sents = [s for p in question.strip().splitlines() for s in split_sentences(p)]
    return any(_TEXT_REQUEST.match(_FILLER.sub("", s)) for s in sents)


def classify(question: str, answer: str) -> str:
    """CODE, STRUCTURED, KEPT (verse, tables, requested text) or REWRITTEN (prose to restructure)."""
    if is_code(answer):
        return CODE
    if has_list(answer) or has_heading(answer):
        return STRUCTURED
    if any("\n" in p.strip() for p in re.split(r"\n\s*\n", answer.strip())) or asks_for_text(question):
        return KEPT
    return REWRITTEN


def _layout(units: list[Unit]) -> tuple[list[Unit], list[list[Unit]], list[Unit], bool] | None:
    """Split units into (lead, list items, closing, numbered?); None when too short for a list."""
    steps = [i for i, u in enumerate(units) if u.step]
    if len(steps) >= 2:
        lead, body = units[: steps[0]], units[steps[0] :]
        last_step = body[-1 - [u.step for u in reversed(body)].index(True)]
        closing = [u for u in body if u.para > last_step.para]
        items: list[list[Unit]] = []
        for u in body[: len(body) - len(closing)]:
            if u.step or not items:
                items.append([u])
            else:
                items[-1].append(u)  # a sentence after a step belongs to that step
        return lead, items, closing, True
    if len(units) < 3:
        return None
    lead, rest = units[:1], units[1:]
    closing = [u for u in rest if u.para == rest[-1].para]
    if len(closing) != 1 or closing[0].para == lead[0].para or len(rest) - 1 < 2:
        closing = []
    items = [[u] for u in rest[: len(rest) - len(closing)]]
    return lead, items, closing, False


def _join(units: list[Unit]) -> str:
    """Units as text: a space within a paragraph, a blank line between paragraphs."""
    out = units[0].text
    for prev, u in pairwise(units):
        out += ("\n\n" if u.para != prev.para else " ") + u.text
    return out


def restructure(question: str, answer: str) -> tuple[str, str]:
    """(kind, text): the Markdown rewrite of ``answer`` (kind REWRITTEN) or the answer unchanged."""
    kind = classify(question, answer)
    if kind != REWRITTEN:
        return kind, answer
    paras = [p.strip() for p in re.split(r"\n\s*\n", answer.strip()) if p.strip()]
    units = [u for i, p in enumerate(paras) for u in paragraph_units(p, i)]
    layout = _layout(units)
    if layout is None:
        return KEPT, answer
    lead, items, closing, numbered = layout
    blocks = [f"## {heading(question)}"]
    if lead:
        blocks.append(_join(lead))
    lines = [
        f"{f'{i}.' if numbered else '-'} {' '.join(u.text for u in item)}" for i, item in enumerate(items, 1)
    ]
    blocks.append("\n".join(lines))
    if closing:
        blocks.append(_join(closing))
    return REWRITTEN, "\n\n".join(blocks)


# --- heading -------------------------------------------------------------------------------------

_FILLER = re.compile(r"^(?:(?:so|and|but|ok|okay|also|well|now|hmm|hi|hey|thanks)\b[,!.]?\s+)+", re.I)


def _pronoun_i(m: re.Match) -> str:
    """'I' -> 'you', except after a capitalised word mid-sentence, where it is a numeral ("World War I")."""
    before = m.string[: m.start()].split()
    if len(before) >= 2 and re.fullmatch(r"[A-Z][a-z]+", before[-1]):
        return "I"
    return "you"


# First person -> second person, so the heading speaks to the reader ("How to fix your code").
_PERSON = [
    (r"\bI am\b", "you are"),
    (r"\bam I\b", "are you"),
    (r"\bI was\b", "you were"),
    (r"\bI['’]m\b", "you're"),
    (r"\bI(?=['’](?:ve|d|ll)\b)", "you"),
    (r"\bI\b(?![/\-.])", _pronoun_i),
    (r"\b[Mm]y\b", "your"),
    (r"\b[Mm]ine\b", "yours"),
    (r"\b[Mm]yself\b", "yourself"),
    (r"\bme\b", "you"),
]
_HOW = re.compile(r"^How (?:do|can|should|would|could|will|might) (?:you|we) (.+)$", re.I)
_WHAT = re.compile(
    r"^What(?:['’]s| is| are) the ((?:difference|(?:best|easiest|quickest|cleanest|simplest|fastest|"
    r"right|safest) way)\b.+)$",
    re.I,
)
MAX_HEADING_WORDS = 16
_ASKS = re.compile(
    r"^(?:what|why|how|when|where|who|which|is|are|do|does|did|can|could|should|would|will)\b", re.I
)


def _second_person(text: str) -> str:
    parts = re.split(r"(`[^`\n]*`)", text)
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        for pattern, repl in _PERSON:
            parts[i] = re.sub(pattern, repl, parts[i])
    return "".join(parts)


def _question_sentence(question: str) -> str:
    """The sentence that asks: the last one ending in '?', else the first; a 1-2 word one takes its predecessor."""
    sents = [s for p in re.split(r"\n+", question.strip()) for s in split_sentences(p)]
    asks = [i for i, s in enumerate(sents) if s.endswith("?")]
    i = asks[-1] if asks else 0
    if len(sents[i].split()) < 3 and i > 0:
        i -= 1
    return sents[i] if sents else ""


def heading(question: str) -> str:
    """A short heading for the answer to ``question`` (deterministic; 'Answer' when nothing fits)."""
    text = _FILLER.sub("", _question_sentence(question)).strip()
    asks = text.endswith("?")
    text = _second_person(text.rstrip(" ?.!:;"))
    for pattern, form in ((_HOW, "How to {}"), (_WHAT, "The {}")):
        m = pattern.match(text)
        if m:
            text, asks = form.format(m.group(1)), False
            break
    words = text.split()
    if len(words) > MAX_HEADING_WORDS:
        head = text.split(",")[0]
        if asks and _ASKS.match(head) and 4 <= len(head.split()) <= MAX_HEADING_WORDS:
            text = head  # the first of several questions: "What is X, and how ...?"
        else:
            text, asks = " ".join(words[: MAX_HEADING_WORDS - 2]).rstrip(",;:") + "…", False
    if len(text.split()) < 2:
        return "Answer"
    return text[0].upper() + text[1:] + ("?" if asks else "")
