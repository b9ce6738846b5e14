"""Sharded training (FSDP2) under ``accelerate launch``, on GPUs and on CPU processes.

``accelerate launch --config_file configs/accelerate/fsdp.yaml`` asks for FSDP through the
environment (``ACCELERATE_USE_FSDP=true``, ``FSDP_VERSION``, ``FSDP_RESHARD_AFTER_FORWARD``). On
CPU processes accelerate (1.16, and its main branch in Dec 2026) does not honour it:
``AcceleratorState.__init__`` switches to ``DistributedType.FSDP`` only inside its branch for
MULTI_GPU/NPU/XPU/MLU/MUSA/SDAA/HPU/NEURON, so a CPU launch (MULTI_CPU, gloo) silently trains as
DDP. PyTorch's FSDP2 (``fully_shard``) runs on a CPU mesh with gloo, and what accelerate does once
its state says FSDP (``fsdp2_prepare_model``, clipping over DTensors, the FULL_STATE_DICT gather
that saves the adapter) runs on CPU as well (tests/test_fsdp.py). :func:`allow_cpu_fsdp` finishes
accelerate's state for such a launch the way that accelerator branch does, and refuses, in one
line, what cannot work instead of falling back to DDP unannounced.

The output head must be whole when airoad's loss reads it after the forward: accelerate >= 1.14
puts the final norm, the embeddings and the head in one FSDP2 unit that is not resharded after
the forward; before that the root unit is, when ``fsdp_reshard_after_forward`` is true.
"""

from __future__ import annotations

import os
from typing import Any

from airoad.core.run.rundir import RunError, world

_PATCHED = False


def fsdp_requested() -> bool:
    """Whether this process was launched for FSDP (accelerate launch with an FSDP config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_fsdp_launch(device: str) -> None:
    """RunError (one line) for an FSDP launch that cannot train airoad's loss here."""
    if not fsdp_requested():
        return
    from accelerate import __version__ as acc_version
    from packaging.version import Version

    version = os.environ.get("FSDP_VERSION", "1")
    if device == "cpu" and version != "2":
        raise RunError(
            f"FSDP on CPU processes runs FSDP2 only (fsdp_version: 2); this launch asks for FSDP{version} "
            "(FSDP1 with sync_module_states is not supported on cpu): use configs/accelerate/fsdp.yaml"
        )
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in ("true", "full_shard")
    if version == "2" and reshard and Version(acc_version) < Version("1.14"):
        raise RunError(
            f"FSDP2 with fsdp_reshard_after_forward: true needs accelerate >= 1.14 (installed: "
            f"{acc_version}): older releases reshard the output head after the forward, before airoad's "
            "loss reads it; `pip install -U accelerate`, or set fsdp_reshard_after_forward: false"
        )


def allow_cpu_fsdp(device: str) -> None:
    """Before the Trainer builds its Accelerator: on an FSDP launch over CPU processes, make
    accelerate's state FSDP (as its accelerator branch would) instead of plain MULTI_CPU (DDP).
    Does nothing elsewhere, and nothing once accelerate itself returns FSDP on CPU."""
    global _PATCHED
    check_fsdp_launch(device)
    if _PATCHED or device != "cpu" or world()[1] < 2 or not fsdp_requested():
        return
    from accelerate import state as acc_state
    from accelerate.utils import DistributedType

    original = acc_state.AcceleratorState.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        plugin = kwargs.get("fsdp_plugin")
        if plugin is None or self.distributed_type != DistributedType.MULTI_CPU:
            return
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = plugin
        acc_state.PartialState._shared_state["distributed_type"] = self.distributed_type

    acc_state.AcceleratorState.__init__ = init
    _PATCHED = True


def sharding_line(trainer: Any) -> str | None:
    """One line naming the sharding a trainer's Accelerator runs, or None when it does not shard."""
    acc = trainer.accelerator
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    version = acc.state.fsdp_plugin.fsdp_version
    reshard = acc.state.fsdp_plugin.reshard_after_forward
    n = acc.num_processes
    return (
        f"sharding: FSDP{version} over {n} processes ({acc.device.type}, {acc.state.backend}): trainable "
        f"weights, gradients and optimizer state 1/{n} per process; frozen weights 1/{n} at rest, "
        f"{'each layer gathered while it runs' if reshard is True else 'gathered from forward to backward'}"
    )
