"""Every command knows its inputs and its outputs: the one check that an output never lands on,
in or over an input, and never replaces an existing output unless asked.

Paths are compared after resolving symlinks, and existing files by inode, so a symlink or a hard
link to an input is the input. An output is refused when it is an input, contains one (a directory
above it) or lies inside one (e.g. a file inside an adapter directory).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from airoad.core.base.errors import UserError


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
) -> list[str]:
    """One line per problem with output ``flag`` = ``out`` (a "file" or a "dir"): missing, the wrong
    kind, an input (see :func:`clash`), or existing (a file, or a non-empty dir) without
    ``overwrite``. Read-only: call before anything is loaded or written."""
    if not out:
        return [f"{flag} is required; give the {'directory' if kind == 'dir' else 'file'} to write"]
    path = Path(out).expanduser()
    hit = clash(path, inputs)
    if hit:
        return [f"{flag} {path}: {hit}; write somewhere else (inputs are never modified)"]
    if kind == "file" and path.is_dir():
        return [f"{flag} {path}: is a directory; give a file path"]
    if kind == "dir" and path.exists() and not path.is_dir():
        return [f"{flag} {path}: is a file; give a directory path"]
    exists = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if exists and not overwrite:
        what = "already exists" if kind == "file" else "is not empty"
        return [f"{flag} {path}: {what}; pass --overwrite true to replace it, or choose another {flag}"]
    if exists and kind == "dir" and (others := foreign(path)):
        return [not_ours(flag, path, others)]
    return [] if path.exists() else creatable(flag, path)


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

MANIFEST = "airoad_manifest.json"  # the names airoad wrote into a directory output
LOCK = ".airoad.lock"


def ours(name: str) -> bool:
    """Names airoad's own machinery leaves in a directory it writes: the manifest, the lock, atomic
    writes' temporary files, and save staging folders."""
    return (
        name in (MANIFEST, LOCK) or name.endswith(".tmp") or name.startswith((".save-", ".adapter-staging"))
    )


def recorded(directory: Path) -> set[str]:
    """Names in ``directory``'s manifest (empty when it has none or it is unreadable)."""
    import json

    try:
        names = json.loads((directory / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and "/" not in n and n not in ("", ".", "..")}


def record(directory: Path, names: Iterable[str]) -> None:
    """Add ``names`` (entries directly in ``directory``) to its manifest, atomically."""
    from airoad.core.base.io import write_json

    write_json(directory / MANIFEST, {"files": sorted(recorded(directory) | set(names))})


def foreign(directory: Path) -> list[str]:
    """Entries of ``directory`` that airoad did not write (not in its manifest, not its machinery)."""
    mine = recorded(directory)
    return sorted(p.name for p in directory.iterdir() if p.name not in mine and not ours(p.name))


def remove_recorded(directory: Path) -> None:
    """Delete what the manifest names (files or folders airoad wrote), and airoad's debris; never
    anything else."""
    import shutil

    for name in recorded(directory) | {
        p.name for p in directory.iterdir() if ours(p.name) and p.name != LOCK
    }:
        p = directory / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


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
    try:
        pid = int((directory / LOCK).read_text().strip() or "0")
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and pid_alive(pid) else None


def acquire_lock(directory: Path, flag: str) -> None:
    """Hold ``directory`` for this process (O_EXCL create; a dead holder's lock is taken over)."""
    path = directory / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(directory)
            if holder is not None:
                raise OutputError(in_use(flag, directory, holder)) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise OutputError(in_use(flag, directory, lock_holder(directory) or 0))


def release_lock(directory: Path) -> None:
    path = directory / LOCK
    try:
        if int(path.read_text().strip() or "0") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def in_use(flag: str, directory: Path, pid: int) -> str:
    return (
        f"{flag} {directory}: in use by another airoad process (pid {pid}); wait for it to finish, "
        f"or choose another {flag}"
    )


# --- a directory output written whole: staged beside it, then renamed in -------------------------


def install_staged(stage: Path, out: Path, scratch: Path) -> None:
    """Rename ``stage`` to ``out``; an existing ``out`` is first moved whole into ``scratch`` (deleted
    later by its owner), so no stale file of it survives and readers never see a half-written one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        os.replace(out, scratch / "previous")
    os.replace(stage, out)


def remove_dead_staging(out: Path, tag: str) -> None:
    """Staging folders ``.<out>.<tag>-<pid>-*`` of earlier writes into ``out`` whose process is gone
    (killed mid-save)."""
    import shutil

    prefix = f".{out.name}.{tag}-"
    for p in out.parent.glob(f"{prefix}*-*"):
        pid = p.name[len(prefix) :].split("-", 1)[0]
        if p.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
