"""Deterministic Markdown restructuring of a plain-prose answer (no model, no randomness).

:func:`restructure` turns an answer into::

    ## <heading derived from the question>

    <lead: the first sentence, or the sentences before the first step>

    - <each following sentence>            (or `1. <step>` when the answer is sequential)

    <closing: a last one-sentence paragraph, when the list keeps two items without it>

A bullet never stands alone as a fragment: a sentence that opens with a connective ("But", "So",
"That's why") stays in the bullet before it, and a short topic sentence ("Ideas traveled too.")
shares a bullet with the sentence it introduces.

Contract: every sentence of the answer appears verbatim in the result, in order, and nothing else
is added but the heading and the list markers. The one exception is inline numbered steps
("1) unplug it, 2) wait" or "Step 1: ..."): their markers become the list numbering and the
separators between them (", and") are dropped. Answers that are code, already structured, laid out
in lines (verse, tables), the text the user asked for, or under three sentences are returned
unchanged, with the kind saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from airoad.core.data.text_checks import has_heading, has_list, is_code

# restructure's kinds: REWRITTEN, or why the answer is returned unchanged.
REWRITTEN, STRUCTURED, CODE = "rewritten", "structured", "code"
LAYOUT, REQUESTED, SHORT = "verse_or_table", "requested_text", "too_short"

_CODE_SPAN = re.compile(r"`[^`\n]*`")
# Punctuation that can end a sentence, closing quotes/brackets, then the whitespace before the next one.
_END = re.compile(r"[.!?]+[\"'”’)\]]*\s+")
_OPENERS = "\"'“‘([`*$£€"
# Words after which a full stop does not end the sentence ("e.g. Python", "Dr. Smith").
_ABBREV = {"e.g", "i.e", "vs", "cf", "mr", "mrs", "ms", "dr", "st", "mt", "approx", "fig", "jr", "sr"}
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
    """CODE, STRUCTURED, LAYOUT (lines: verse, tables), REQUESTED (the text asked for) or REWRITTEN
    (prose to restructure; :func:`restructure` may still find it SHORT)."""
    if is_code(answer):
        return CODE
    if has_list(answer) or has_heading(answer):
        return STRUCTURED
    if any("\n" in p.strip() for p in re.split(r"\n\s*\n", answer.strip())):
        return LAYOUT
    return REQUESTED if asks_for_text(question) else REWRITTEN


# A sentence that leans on the one before it; alone in a bullet it reads as a fragment.
_LEANS_BACK = re.compile(r"^(?:But|So|Yet|And|Otherwise|(?:That|This|Which)(?:['’]s| is) why)\b")
TOPIC_WORDS = 5  # a sentence this short, without figures, introduces the next ("Ideas traveled too.")


def _is_topic(item: list[Unit]) -> bool:
    text = item[0].text
    return (
        len(item) == 1
        and len(text.split()) <= TOPIC_WORDS
        and text.endswith(".")
        and not re.search(r"\d", text)
    )


def _bullet_items(units: list[Unit]) -> list[list[Unit]]:
    """One bullet per sentence, except that a sentence leaning back ("But ...") joins the bullet
    before it and a short topic sentence shares a bullet with the next sentence (same paragraph
    only). One bullet per sentence when joining would leave fewer than two bullets."""
    items: list[list[Unit]] = []
    for u in units:
        if items and items[-1][-1].para == u.para and (_LEANS_BACK.match(u.text) or _is_topic(items[-1])):
            items[-1].append(u)
        else:
            items.append([u])
    return items if len(items) >= 2 else [[u] for u in units]


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
    return lead, _bullet_items(rest[: len(rest) - len(closing)]), closing, False


def _join(units: list[Unit]) -> str:
    """Units as text: a space within a paragraph, a blank line between paragraphs."""
    out = units[0].text
    for prev, u in pairwise(units):
        out += ("\n\n" if u.para != prev.para else " ") + u.text
    return out


def restructure(question: str, answer: str) -> tuple[str, str]:
    """(kind, text): the Markdown rewrite of ``answer`` (kind REWRITTEN), or the answer unchanged
    with the reason as its kind (CODE, STRUCTURED, LAYOUT, REQUESTED, SHORT)."""
    kind = classify(question, answer)
    if kind != REWRITTEN:
        return kind, answer
    paras = [p.strip() for p in re.split(r"\n\s*\n", answer.strip()) if p.strip()]
    units = [u for i, p in enumerate(paras) for u in paragraph_units(p, i)]
    layout = _layout(units)
    if layout is None:
        return SHORT, answer
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
# "What is photosynthesis?" / "Who was Ada Lovelace?": the thing asked about is the title.
_DEFINE = re.compile(r"^(?:What|Who)(?:['’]s| is| are| was| were) ([^,;]+)$")
# Words that cannot open such a title: pronouns need the conversation, the rest ask about a state.
_NOT_A_TOPIC = {
    "it", "its", "that", "this", "they", "them", "their", "these", "those", "you", "your", "yours",
    "we", "our", "he", "she", "his", "her", "there", "wrong", "right", "up", "happening", "going",
    "new", "next", "better", "worse", "best", "worst", "more", "less", "in", "on", "at", "for",
    "with", "to", "like", "so", "not",
}  # fmt: skip
# "Why do we see ...?" -> "Why we see ...": dropping a plural "do" leaves a grammatical clause.
_DO = re.compile(r"^(Why|How|When|Where|What) do ((?!not\b)\w.+)$")
# A second question joined on ("..., and when do I use each?"): a title would garble it.
_COMPOUND = re.compile(
    r"\s(?:and|or)\s+(?:what|why|how|when|where|who|which|is|are|do|does|did|can|could|should|would)\b",
    re.I,
)
MAX_HEADING_WORDS = 16
# Where a long heading can end: before a comma or a subordinate clause.
_CLAUSE = re.compile(r",\s|\s(?=(?:when|while|because|if|since|although|unless|so that|and|but)\s)")
# Words that refer back to the sentence before; a question made of them needs that sentence.
_REFERS = re.compile(r"\b(?:it|its|that|this|they|them|their|these|those)\b", re.I)
_VAGUE = {
    "what", "why", "how", "where", "when", "who", "which", "should", "would", "could", "can", "do",
    "does", "did", "is", "are", "was", "were", "will", "i", "you", "we", "now", "then", "there",
    "any", "else", "next", "about", "a", "an", "the", "to", "me", "look", "like", "fix", "ideas",
    "happens", "happen", "help", "suggestions", "tips", "advice",
}  # fmt: skip
# Words lowercased when the situation becomes "If ...": its first word is no longer a sentence start.
_LOWER_FIRST = {
    "the", "a", "an", "your", "yours", "you", "my", "our", "we", "he", "she", "his", "her", "some",
    "every", "all", "each", "one", "two", "three", "adding", "using",
}  # fmt: skip


def _second_person(text: str) -> str:
    parts = re.split(r"(`[^`\n]*`)", text)
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        for pattern, repl in _PERSON:
            parts[i] = re.sub(pattern, repl, parts[i])
    return "".join(parts)


def _sentences(question: str) -> list[str]:
    return [s for p in re.split(r"\n+", question.strip()) for s in split_sentences(p)]


def _asking_index(sents: list[str]) -> int:
    """The sentence that asks: the last one ending in '?', else the first."""
    asks = [i for i, s in enumerate(sents) if s.endswith("?")]
    return asks[-1] if asks else 0


def _situation(sents: list[str], i: int) -> str | None:
    """'If <the sentence before>' when question ``i`` makes sense only after it ("My wifi keeps
    dropping. What should I do?" -> "If your wifi keeps dropping"); None when it stands alone or
    the sentence before is itself a question or leans on earlier turns ("I've done that")."""
    ask = sents[i]
    words = [w.strip("?.!,;:'\"").lower() for w in ask.split()]
    leans = len(words) < 3 or bool(_REFERS.search(ask)) or all(w in _VAGUE for w in words)
    if i == 0 or not leans or sents[i - 1].endswith("?"):
        return None
    before = _FILLER.sub("", sents[i - 1]).rstrip(" .!:;")
    if len(before.split()) < 3 or re.search(r"\b(?:that|this|they|them|these|those)\b|^It\b", before, re.I):
        return None
    before = _second_person(re.sub(r"^If\s+", "", before))
    first = before.split()[0]
    if first.lower() in _LOWER_FIRST or (first.endswith("ing") and first[1:].islower()):
        before = first.lower() + before[len(first) :]
    return "If " + before


def _as_title(text: str) -> str | None:
    """The question recast as a title ("How to ...", "The difference ...", "Photosynthesis",
    "Why we see ..."), or None when no rule fits and the question stays a question."""
    if _COMPOUND.search(text):
        return None
    for pattern, form in ((_HOW, "How to {}"), (_WHAT, "The {}")):
        m = pattern.match(text)
        if m:
            return form.format(m.group(1))
    m = _DEFINE.match(text)
    if m:
        topic = m.group(1).split()
        plain = topic[0].lower() in {"the", "a", "an"} or topic[0][0].isupper() or topic[0][0].isdigit()
        if topic[0].lower() not in _NOT_A_TOPIC and (plain or len(topic) <= 3):
            return " ".join(topic)
    m = _DO.match(text)
    return f"{m.group(1)} {m.group(2)}" if m else None


def _shortened(text: str, asks: bool) -> tuple[str, bool]:
    """At most MAX_HEADING_WORDS: cut before the last comma or subordinate clause that leaves 4 or
    more words ("Why does a metal spoon feel colder than a wooden one?"), else at the word limit
    with an ellipsis (no longer a question)."""
    if len(text.split()) <= MAX_HEADING_WORDS:
        return text, asks
    cuts = [
        m.start() for m in _CLAUSE.finditer(text) if 4 <= len(text[: m.start()].split()) <= MAX_HEADING_WORDS
    ]
    if cuts:
        return text[: cuts[-1]].rstrip(" ,;:"), asks
    return " ".join(text.split()[: MAX_HEADING_WORDS - 2]).rstrip(",;:") + "…", False


def heading(question: str) -> str:
    """A short heading for the answer to ``question`` (deterministic; 'Answer' when nothing fits):
    a title made from the question when a rule fits, the situation for a follow-up that needs it,
    else the asking sentence itself, in the second person."""
    sents = _sentences(question)
    if not sents:
        return "Answer"
    i = _asking_index(sents)
    text, asks = _situation(sents, i), False
    if text is None:
        if len(sents[i].split()) < 3 and i > 0:
            i -= 1  # "What now?" says nothing; the sentence before does
        text = _FILLER.sub("", sents[i]).strip()
        asks = text.endswith("?")
        text = _second_person(text.rstrip(" ?.!:;"))
        if len(text.split()) < 2:
            return "Answer"
        title = _as_title(text)
        if title is not None:
            text, asks = title, False
    text, asks = _shortened(text, asks)
    return text[0].upper() + text[1:] + ("?" if asks else "")
