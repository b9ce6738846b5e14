"""Every command knows its inputs and its outputs: the one check that an output never lands on,
in or over an input, and never replaces an existing output unless asked.

Paths are compared after resolving symlinks, and existing files by inode, so a symlink or a hard
link to an input is the input. An output is refused when it is an input, contains one (a directory
above it) or lies inside one (e.g. a file inside an adapter directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from airoad.core.base.errors import UserError
from airoad.core.base.io import write_json


class OutputError(UserError):
    """An output path that would destroy an input or an existing output (one line each)."""


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _within(inner: Path, outer: Path) -> bool:
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


def clash(out: Path, inputs: Iterable[tuple[str, str | Path | None]]) -> str | None:
    """What ``out`` would do to an input, or None. ``inputs``: (its flag or key, its path)."""
    for label, raw in inputs:
        if not raw:
            continue
        src = Path(raw).expanduser()
        if not src.exists():
            continue
        if _same(out, src):
            return (
                f"is or contains the input {label} {src}"
                if src.is_dir()
                else f"is also an input ({label} {src})"
            )
        if src.is_dir() and _within(out, src):
            return f"lies inside the input {label} {src}"
        if _within(src, out):
            return f"is or contains the input {label} {src}"
    return None


def output_problems(
    flag: str,
    out: str | Path | None,
    inputs: Iterable[tuple[str, str | Path | None]],
    *,
    overwrite: bool,
    kind: str = "file",
    writer: str | None = None,
) -> list[str]:
    """One line per problem with output ``flag`` = ``out`` (a "file" or a "dir"): missing, the wrong
    kind, an input (see :func:`clash`), a file of another airoad output, or existing (a file, or a
    non-empty dir) without ``overwrite``; with it, a dir holding what airoad did not write, or
    another command's kind of output (``writer``: this command, e.g. "airoad merge"). Read-only:
    call before anything is loaded or written."""
    what = "directory" if kind == "dir" else "file"
    if out is None:
        return [f"{flag} is required; give the {what} to write"]
    if not str(out).strip():
        return [f"{flag} '' is empty; give the {what} to write"]
    path = Path(out).expanduser()
    hit = clash(path, inputs)
    if hit:
        return [f"{flag} {path}: {hit}; write somewhere else (inputs are never modified)"]
    if kind == "file" and path.is_dir():
        return [f"{flag} {path}: is a directory; give a file path"]
    if kind == "dir" and path.exists() and not path.is_dir():
        return [f"{flag} {path}: is a file; give a directory path"]
    if owner := inside_output(path):
        return [
            f"{flag} {path}: lies inside {owner}; write somewhere else (airoad never writes into another output)"
        ]
    exists = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if exists and not overwrite:
        what = "already exists" if kind == "file" else "is not empty"
        return [f"{flag} {path}: {what}; pass --overwrite true to replace it, or choose another {flag}"]
    if exists and kind == "dir":
        return replace_problems(flag, path, writer)
    return [] if path.exists() else creatable(flag, path)


def replace_problems(flag: str, path: Path, writer: str | None) -> list[str]:
    """Why ``--overwrite`` may not replace the directory ``path`` (empty list: it may): it is in use,
    it holds a file airoad did not write, or another command's kind of output."""
    if (holder := lock_holder(path)) is not None:
        return [in_use(flag, path, holder)]
    if others := foreign(path):
        return [not_ours(flag, path, others)]
    have, want = writer_kind(path), WRITER_KINDS.get(writer or "")
    if have and want and have != want:
        return [
            f"{flag} {path}: holds {have}; --overwrite only replaces what `{writer}` wrote: "
            f"choose another {flag}"
        ]
    return []


def inside_output(path: Path) -> str | None:
    """ "the training run DIR" when ``path`` lies inside a directory another airoad command wrote
    (a manifest in an ancestor), else None."""
    for parent in path.resolve().parents:
        if (parent / MANIFEST).is_file():
            return f"{writer_kind(parent) or 'an airoad output'} {parent}"
    return None


def not_ours(flag: str, path: Path, others: list[str]) -> str:
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return (
        f"{flag} {path}: holds files airoad did not write ({shown}); --overwrite only replaces "
        f"airoad's own files: move them away, or choose another {flag}"
    )


def creatable(flag: str, path: Path) -> list[str]:
    """A line when ``path`` cannot be created. Tried for real (a scratch directory made and removed
    in its nearest existing ancestor): permission bits say nothing to root, nor about /proc."""
    if path.is_symlink():  # exists() was False: the link points nowhere
        return [f"{flag} {path}: is a broken symbolic link; remove it or choose another {flag}"]
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link: mkdir would fail under it
            return [f"{flag} {path}: {parent} is a broken symbolic link; choose another {flag}"]
        parent = parent.parent
    if not parent.is_dir():
        return [
            f"{flag} {path}: {parent} is a file, so nothing can be created under it; choose another {flag}"
        ]
    try:
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".airoad-probe-"))
    except OSError as e:
        return [f"{flag} {path}: cannot create it under {parent} ({e.strerror}); choose another {flag}"]
    return []


# --- what airoad wrote into a directory output ---------------------------------------------------

MANIFEST = "airoad_manifest.json"  # the paths airoad wrote into a directory output, and which command
LOCK = ".airoad.lock"
# Files inside a recorded folder that airoad's libraries write under names it knows, recorded or not
# (a run killed mid-save, or recorded by an older airoad as the folder alone): HF checkpoints.
KNOWN_NESTED = re.compile(
    r"checkpoints/checkpoint-\d+(/(adapter_model\.safetensors|adapter_config\.json|README\.md|"
    r"optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth|trainer_state\.json|"
    r"training_args\.bin|airoad_state\.json|tokenizer[^/]*|vocab\.json|merges\.txt|"
    r"special_tokens_map\.json|added_tokens\.json|chat_template\.jinja))?"
)
# A manifest's writer names the kind of output; --overwrite never replaces another kind's.
WRITER_KINDS = {
    "airoad train": "a training run",
    "airoad pref": "a training run",
    "airoad merge": "a merged checkpoint",
    "airoad export gguf": "a GGUF export",
    "airoad export coreml": "a Core ML export",
    "airoad export mlx": "an MLX export",
}


def ours(name: str) -> bool:
    """Names airoad's own machinery leaves in a directory it writes: the manifest, the lock, atomic
    writes' temporary files, and save staging folders."""
    return (
        name in (MANIFEST, LOCK) or name.endswith(".tmp") or name.startswith((".save-", ".adapter-staging"))
    )


def _manifest(directory: Path) -> dict:
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _safe_rel(name: object) -> bool:
    return isinstance(name, str) and bool(name) and not name.startswith("/") and ".." not in name.split("/")


def recorded(directory: Path) -> set[str]:
    """Paths (relative, '/'-separated) in ``directory``'s manifest; empty when it has none."""
    names = _manifest(directory).get("files", [])
    return (
        {n.rstrip("/") for n in names if _safe_rel(n) and n not in (".", "./")}
        if isinstance(names, list)
        else set()
    )


def writer_kind(directory: Path) -> str | None:
    """What kind of airoad output ``directory`` holds ("a training run", ...), or None. Manifests of
    older airoads name no writer: told apart by the files they record."""
    writer = _manifest(directory).get("writer")
    if isinstance(writer, str) and writer in WRITER_KINDS:
        return WRITER_KINDS[writer]
    names = recorded(directory)
    if "run_config.yaml" in names:
        return "a training run"
    if "airoad_merge.json" in names:
        return "a merged checkpoint"
    return "an export" if "export_info.json" in names else None


def record(directory: Path, names: Iterable[str], writer: str | None = None) -> None:
    """Add ``names`` (paths relative to ``directory``) to its manifest, atomically; ``writer`` (the
    command) is kept from the first record that names it."""

    old = _manifest(directory)
    files = sorted(recorded(directory) | {n for n in names if _safe_rel(n)})
    who = old.get("writer") if isinstance(old.get("writer"), str) else writer
    write_json(directory / MANIFEST, {"files": files, **({"writer": who} if who else {})})


def record_tree(directory: Path, writer: str | None = None) -> None:
    """Record every entry under ``directory`` (nested files included) as airoad's."""
    names = [p.relative_to(directory).as_posix() for p in _walk(directory)]
    record(directory, [n for n in names if not ours(n.split("/")[0])], writer)


def _walk(directory: Path) -> list[Path]:
    """Every entry under ``directory``, depth first, folders before their contents; symlinks are
    entries, never followed."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        found += [Path(root) / d for d in sorted(dirs)] + [Path(root) / f for f in sorted(files)]
    return found


def foreign(directory: Path) -> list[str]:
    """Entries of ``directory`` airoad did not write, nested ones included: a top-level name not in
    the manifest (nor airoad's machinery), or a file inside a recorded folder that is neither
    recorded nor one :data:`KNOWN_NESTED` names. A folder recorded by an older airoad with nothing
    under it recorded counts as airoad's whole (checkpoints excepted: their names are known)."""
    mine = recorded(directory)
    others = []
    for top in sorted(directory.iterdir(), key=lambda p: p.name):
        if ours(top.name):
            continue
        if top.name not in mine:
            others.append(top.name)
            continue
        if not top.is_dir() or top.is_symlink():
            continue
        nested = {n for n in mine if n.startswith(top.name + "/")}
        if not nested and not KNOWN_NESTED.fullmatch(top.name + "/checkpoint-0"):
            continue  # legacy: the folder alone was recorded
        for p in _walk(top):
            rel = p.relative_to(directory).as_posix()
            if rel in mine or KNOWN_NESTED.fullmatch(rel) or (p.is_dir() and not p.is_symlink()):
                continue
            others.append(rel)
    return others


def remove_recorded(directory: Path) -> None:
    """Delete what airoad wrote (the manifest's paths, :data:`KNOWN_NESTED` files, airoad's debris),
    then the folders left empty; never anything else (callers have refused :func:`foreign` first)."""
    others = set(foreign(directory))
    mine = recorded(directory)
    for top in list(directory.iterdir()):
        if top.name == LOCK or (top.name not in mine and not ours(top.name)):
            continue
        if top.is_dir() and not top.is_symlink():
            for p in reversed(_walk(top)):
                rel = p.relative_to(directory).as_posix()
                if p.is_dir() and not p.is_symlink():
                    _rmdir_if_empty(p)
                elif rel not in others:
                    p.unlink(missing_ok=True)
            _rmdir_if_empty(top)
        else:
            top.unlink(missing_ok=True)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty: it holds something airoad did not write


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return pid > 0


def lock_holder(directory: Path) -> int | None:
    """The pid of a live process holding ``directory``'s lock, or None (no lock, or a stale one)."""
    pid = _pid_in(directory / LOCK)
    return pid if pid and pid != os.getpid() and pid_alive(pid) else None


def acquire_lock(directory: Path, flag: str) -> None:
    """Hold ``directory`` (a training run's, locked from inside) for this process: :func:`take_lock`."""
    take_lock(directory / LOCK, flag, directory)


def release_lock(directory: Path) -> None:
    release_file_lock(directory / LOCK)


def in_use(flag: str, directory: Path, pid: int) -> str:
    return (
        f"{flag} {directory}: in use by another airoad process (pid {pid}); wait for it to finish, "
        f"or choose another {flag}"
    )


# --- a directory output written whole: staged beside it, then renamed in -------------------------


def install_staged(stage: Path, out: Path, scratch: Path, *, writer: str | None = None) -> None:
    """Rename ``stage`` to ``out``; an existing ``out`` is first moved whole into ``scratch`` (deleted
    later by its owner), so no stale file of it survives and readers never see a half-written one.
    Re-checked just before: an ``out`` that gained a file airoad did not write, or another kind of
    output, since the command checked it is refused (OutputError), never swapped out."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        if not out.is_dir() or (problems := replace_problems("--out", out, writer)):
            raise OutputError(
                problems if out.is_dir() else f"--out {out}: became a file while writing; nothing replaced"
            )
        os.replace(out, scratch / "previous")
    os.replace(stage, out)


def lock_path(out: Path) -> Path:
    """The lock of an output that is written whole (a file, or a staged directory): beside it, so a
    swap of the output never moves its lock."""
    return out.parent / f".{out.name}.airoad-lock"


@contextlib.contextmanager
def holding(outputs: list[tuple[str, Path]]) -> Iterator[None]:
    """Hold each (flag, path) output for this process while the body runs: a lock file beside it
    (:func:`lock_path`; a second airoad process is refused with one line), its missing parent
    folders created. On the way out the locks go, and so do the folders created here when nothing
    was written into them."""
    made: list[Path] = []
    held: list[Path] = []
    try:
        for flag, out in outputs:
            parent = out.parent
            missing = [d for d in (parent, *parent.parents) if not d.exists()]
            parent.mkdir(parents=True, exist_ok=True)
            made += missing
            lock = lock_path(out)
            take_lock(lock, flag, out)
            held.append(lock)
        yield
    finally:
        for lock in held:
            release_file_lock(lock)
        for d in made:  # deepest first
            _rmdir_if_empty(d)


def take_lock(lock: Path, flag: str, out: Path) -> None:
    """Create ``lock`` holding this pid (O_EXCL); a dead holder's lock is taken over."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _pid_in(lock)
            if holder and holder != os.getpid() and pid_alive(holder):
                raise OutputError(in_use(flag, out, holder)) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise OutputError(in_use(flag, out, _pid_in(lock) or 0))


def _pid_in(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        return None


def release_file_lock(lock: Path) -> None:
    if _pid_in(lock) == os.getpid():
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_dir(out: Path, tag: str, writer: str) -> Iterator[tuple[Path, Path]]:
    """The one way a directory output is written whole (merge, every export): yields (stage,
    scratch), two empty folders beside ``out`` on its file system; when the body returns, every
    file in ``stage`` is recorded as ``writer``'s and ``stage`` is renamed to ``out``
    (:func:`install_staged`, re-checked). An exception (a failed check) keeps nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(out, tag)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.{tag}-{os.getpid()}-") as tmp:
        stage, scratch = Path(tmp) / "stage", Path(tmp) / "scratch"
        stage.mkdir()
        scratch.mkdir()
        yield stage, scratch
        record_tree(stage, writer)  # what a later --overwrite may replace, nested files included
        install_staged(stage, out, Path(tmp), writer=writer)


def remove_dead_staging(out: Path, tag: str) -> None:
    """Staging folders ``.<out>.<tag>-<pid>-*`` of earlier writes into ``out`` whose process is gone
    (killed mid-save)."""

    prefix = f".{out.name}.{tag}-"
    for p in out.parent.glob(f"{prefix}*-*"):
        pid = p.name[len(prefix) :].split("-", 1)[0]
        if p.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
