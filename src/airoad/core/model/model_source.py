"""Where a model named by the user comes from: a local directory, the local hub cache, or the hub.

transformers, asked for a hub id it cannot reach, retries each file for ~50 s and prints every retry
before failing. :func:`resolve_model` decides in a second instead: a local directory is used as it is;
a hub id is used from the local cache when the hub is offline (``HF_HUB_OFFLINE``) or unreachable,
downloaded when it is reachable, and otherwise refused with one line saying what to do.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from airoad.core.base.errors import UserError

HUB_TIMEOUT_S = 3.0
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class ModelSourceError(UserError):
    """A model path or hub id that cannot be used here (one line)."""


@dataclass(frozen=True)
class ModelSource:
    """``path`` is what to hand to ``from_pretrained``; ``how`` says where it comes from, for the
    line a command prints before loading: "local", "cache" or "download"."""

    name: str
    path: str
    how: str

    def describe(self) -> str:
        if self.how == "download":
            return f"{self.name} (downloading from the Hugging Face hub; later runs load it from the cache)"
        if self.how == "cache":
            return f"{self.name} (from the local Hugging Face cache)"
        return self.name


def looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else is meant as a path."""
    return name.startswith(("/", "./", "../", "~", ".")) or name.count("/") > 1 or "\\" in name


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """One TCP connect to the hub endpoint (``HF_ENDPOINT`` or huggingface.co). Behind a proxy the
    direct connect proves nothing: then the hub is assumed reachable and transformers decides."""
    if any(os.environ.get(v) for v in PROXY_VARS):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def cached_snapshot(repo_id: str) -> str | None:
    """The local cache's snapshot folder of ``repo_id`` (no network), or None."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError; a bad id a ValueError
        return None


def resolve_model(name: str, key: str = "base_model") -> ModelSource:
    """Where ``name`` (the value of option ``key``) loads from; ModelSourceError, in about a second,
    when it cannot load here."""
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelSourceError(f"{key} {name!r} is a file; give a model directory or a hub id")
        return ModelSource(name, str(p), "local")
    if looks_like_path(name):
        raise ModelSourceError(f"{key} {name!r}: no such directory; give a model directory or a hub id")
    offline = hub_offline()
    if not offline and hub_reachable():
        return ModelSource(name, name, "download")
    snapshot = cached_snapshot(name)
    if snapshot is not None:
        return ModelSource(name, snapshot, "cache")
    why = "HF_HUB_OFFLINE is set" if offline else "huggingface.co cannot be reached"
    raise ModelSourceError(
        f"{key} {name!r} is not a local directory nor in the local Hugging Face cache, and {why}; "
        f"pass --{key} DIR (a downloaded model directory), or download it once where there is a "
        f"network: `hf download {name} --local-dir models/{name.rsplit('/', 1)[-1]}`"
    )
