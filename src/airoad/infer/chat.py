"""`airoad chat RUN_DIR`: talk to a tune, switch to its base from the same weights, save a fixed
answer as training data.

    airoad chat outputs/my_run                 # the tuned side answers; /base, /tuned, /compare
    printf 'Hi\n/compare\n/save more.jsonl\n' | airoad chat outputs/my_run   # scripted

One model in memory (:func:`airoad.infer.loading.load`): "base" is the same PeftModel with its
adapters disabled. Each side keeps its own KV cache (:mod:`airoad.core.model.stream`), so a turn
prefills its own tokens only. Answers stream as they are generated; Ctrl-C stops the answer being
written (the part shown stays in the chat), not the session; Ctrl-D (EOF) or /exit leaves, exit 0.

With stdin a terminal the chat prompts (``you>``) and labels each answer with its side; piped, it
reads one user turn (or /command) per line and writes each answer as plain text, one blank line
after it, on stdout; what a /command says goes to stderr, so stdout holds answers only.

``/save FILE`` appends the conversation as one ChatML row, checked by the training row rules
(:func:`airoad.core.data.chat_data.row_problem`). It writes a new file, or appends (atomically, the
file's rows kept) to a JSONL whose every row is already a valid training row; it refuses the
chat's inputs (the adapters, the base, the run's data files), anything inside an airoad output
(the run dir), and a file holding anything else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from airoad.core.base.errors import UserError
from airoad.core.base.io import read_utf8, write_text
from airoad.core.base.outputs import clash, creatable, inside_output
from airoad.core.data.chat_data import read_rows, row_problem
from airoad.infer.loading import Loaded, load
from airoad.infer.schema import ChatConfig

if TYPE_CHECKING:  # the stream module imports torch: loaded when a chat answers, not for --help
    from airoad.core.model.stream import Turns

HELP = """commands:
  /compare       the last question answered by base and tuned, one after the other (the
                 chat's own answer is shown as it was given, the other side answers now)
  /base, /tuned  which side answers from now on
  /system TEXT   set the system turn (/system alone shows it; the chat goes on)
  /reset         forget the conversation
  /retry         answer the last question again (sampling: a new seed)
  /edit TEXT     replace the last answer with TEXT, \n for a line break (then /save it)
  /save FILE     append the conversation to FILE as one ChatML training row
  /help          this list
  /exit          leave (Ctrl-D too); Ctrl-C stops an answer being written"""


@dataclass
class Chat:
    """One session: the loaded model, the conversation (user/assistant turns), each side's cache."""

    loaded: Loaded
    cfg: ChatConfig
    inputs: list[tuple[str, Path]]
    out: TextIO = field(default_factory=lambda: sys.stdout)  # looked up now: tests swap sys.stdout
    say: Callable[[str], None] = print  # what a /command reports
    interactive: bool = False
    side: str = "tuned"
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    caches: dict[str, Turns] = field(default_factory=dict)
    answers: int = 0  # answers generated so far: the n-th is seeded with seed + n
    answered_by: str | None = None  # the side that wrote the last answer (None: edited, or none yet)

    def messages(self, history: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
        turns = self.history if history is None else history
        return ([{"role": "system", "content": self.system}] if self.system else []) + turns

    def answer(self, side: str, history: list[dict[str, str]], label: bool) -> str:
        """Stream ``side``'s answer to ``history`` (ending with a user turn) to ``out``, under a
        label naming the side when ``label``; returns it. Ctrl-C stops it: the text shown so far
        is the answer."""
        from airoad.core.model.stream import Decoding, Turns, reply

        decoding = Decoding(
            self.cfg.max_new_tokens, self.cfg.temperature, self.cfg.top_p, self.cfg.seed + self.answers
        )
        self.answers += 1
        if label:
            self.out.write(f"{side}> " if self.interactive else f"[{side}]\n")
        pieces: list[str] = []
        with self.loaded.side(side):
            r = reply(
                self.loaded.model,
                self.loaded.tokenizer,
                self.messages(history),
                decoding,
                self.caches.setdefault(side, Turns()),
            )
            try:
                for piece in r:
                    pieces.append(piece)
                    self.out.write(piece)
                    self.out.flush()
            except KeyboardInterrupt:
                self.out.write(" [stopped]")
        self.out.write("\n\n" if not self.interactive else "\n")
        self.out.flush()
        return "".join(pieces)

    def ask(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})
        answer = self.answer(self.side, self.history, label=self.interactive)
        # kept even when empty (a stop token at once, Ctrl-C): /retry or /edit fix it
        self.history.append({"role": "assistant", "content": answer})
        self.answered_by = self.side

    # --- commands -------------------------------------------------------------------------------

    def last_question(self) -> list[dict[str, str]] | None:
        """The history up to and including the last user turn, or None (nothing asked yet)."""
        for i in range(len(self.history) - 1, -1, -1):
            if self.history[i]["role"] == "user":
                return self.history[: i + 1]
        self.say("nothing asked yet")
        return None

    def compare(self, _: str) -> None:
        if len(self.loaded.sides) == 1:
            self.say("no adapters loaded: there is only the base side")
            return
        asked = self.last_question()
        if asked is None:
            return
        for side in self.loaded.sides:
            if side == self.answered_by:  # the chat's own answer, shown as it was given
                self.out.write(f"{side}> " if self.interactive else f"[{side}]\n")
                self.out.write(self.history[-1]["content"] + ("\n" if self.interactive else "\n\n"))
                self.out.flush()
            else:
                self.answer(side, list(asked), label=True)

    def switch(self, side: str) -> None:
        if side not in self.loaded.sides:
            self.say("no adapters loaded: there is only the base side")
            return
        self.side = side
        self.say(f"{side} answers from now on")

    def set_system(self, text: str) -> None:
        if not text:
            self.say(
                f"system: {self.system!r}" if self.system else "system: none (the chat template's default)"
            )
            return
        self.system = text
        self.say("system turn set")

    def reset(self, _: str) -> None:
        self.history.clear()
        self.answered_by = None
        self.say("conversation cleared")

    def retry(self, _: str) -> None:
        asked = self.last_question()
        if asked is not None:
            self.history[:] = asked[:-1]
            self.ask(asked[-1]["content"])

    def edit(self, text: str) -> None:
        if not self.history or self.history[-1]["role"] != "assistant":
            self.say("no answer to edit yet")
        elif not text.strip():
            self.say("give the new answer: /edit TEXT")
        else:
            self.history[-1]["content"] = text.replace("\\n", "\n")  # a typed \n is a line break
            self.answered_by = None  # yours now: /compare asks both sides again
            self.say("last answer replaced")

    def save(self, arg: str) -> None:
        if not arg.strip():
            self.say("give a file: /save FILE")
            return
        path = Path(arg.strip()).expanduser()
        row = {"messages": self.messages()}
        problem = row_problem(row) or save_problem(path, self.inputs)
        if problem:
            self.say(f"not saved: {problem}")
            return
        kept = read_utf8(path)[0] if path.exists() else ""
        if kept and not kept.endswith("\n"):
            kept += "\n"
        write_text(path, kept + json.dumps(row, ensure_ascii=False) + "\n")
        self.say(f"saved the conversation ({len(self.history)} turns) as a row of {path}")

    def handle(self, line: str) -> bool:
        """One line of input; False when the session ends."""
        if not line.startswith("/"):
            if line.strip():
                self.ask(line)
            return True
        name, _, arg = line[1:].partition(" ")
        if name in ("exit", "quit"):
            return False
        commands: dict[str, Callable[[str], None]] = {
            "compare": self.compare,
            "base": lambda _: self.switch("base"),
            "tuned": lambda _: self.switch("tuned"),
            "system": self.set_system,
            "reset": self.reset,
            "retry": self.retry,
            "edit": self.edit,
            "save": self.save,
            "help": lambda _: self.say(HELP),
        }
        if name not in commands:
            self.say(f"unknown command /{name}; /help lists them")
        else:
            commands[name](arg)
        return True


def save_problem(path: Path, inputs: list[tuple[str, Path]]) -> str | None:
    """Why ``/save`` may not write ``path`` (None: it may): an input, inside an airoad output, not
    a file, or an existing file that is not all training rows."""
    if hit := clash(path, inputs):
        return f"{path} {hit}; save somewhere else (inputs are never modified)"
    if owner := inside_output(path):
        return f"{path} lies inside {owner}; save somewhere else"
    if path.is_dir():
        return f"{path} is a directory; give a .jsonl file"
    if not path.exists():
        lines = creatable("/save", path)
        return lines[0].removeprefix("/save ") if lines else None
    try:
        read_rows(path)
    except UserError as e:
        return f"{path} holds what is not a training row ({e.problems[0]}); /save appends only to a JSONL of training rows"
    return None


def read_lines(interactive: bool) -> Any:
    """The user's lines: prompted with ``you>`` on a terminal, else stdin's lines. Ctrl-C at the
    prompt says how to leave and goes on."""
    if not interactive:
        for line in sys.stdin:
            yield line.rstrip("\n")
        return
    while True:
        try:
            yield input("you> ")
        except KeyboardInterrupt:
            print("\n(Ctrl-D or /exit leaves)")
        except EOFError:
            print()
            return


def run(cfg: ChatConfig, inv: Any) -> int:
    interactive = sys.stdin.isatty()
    say = print if interactive else (lambda line: print(line, file=sys.stderr))
    loaded = load(inv.source, cfg.device, cfg.dtype, cfg.trust_remote_code)
    side = cfg.side if cfg.side in loaded.sides else "base"
    chat = Chat(loaded, cfg, inv.inputs, say=say, interactive=interactive, side=side)
    chat.system = loaded.system_prompt(cfg.system_prompt)
    tuned = f" + {inv.source.adapters}" if inv.source.adapters else ""
    say(
        f"chat: {inv.source.base}{tuned} on {loaded.device} ({str(loaded.dtype).replace('torch.', '')}); {side} answers; /help lists the commands"
    )
    for line in read_lines(interactive):
        if not chat.handle(line):
            break
    return 0
