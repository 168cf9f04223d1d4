"""Data-parallel training on ``torch.distributed``: the process group, this process's rank, and the few
collectives the :class:`~graphattn.training.Trainer` and the tasks need.

``torchrun`` starts one process per rank and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` (and the rendezvous
address) in each one's environment; :func:`init_from_env` joins the group when ``WORLD_SIZE > 1`` (gloo on CPU,
nccl on CUDA, where each process takes the GPU of its ``LOCAL_RANK``). Everything else here answers for a single
process when no group is initialised, so code that calls it runs unchanged in a plain ``python run.py``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["init_from_env", "shutdown", "is_distributed", "rank", "world_size", "is_main", "all_gather_object",
           "broadcast_object", "broadcast_buffers", "all_reduce_sum"]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an integer (torchrun sets it), got {value!r}") from None


def init_from_env(device: str | torch.device) -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment; returns this process's device.

    With ``WORLD_SIZE`` unset or 1 nothing happens and ``device`` is returned as given. Otherwise the backend
    is nccl when ``device`` is CUDA (the process then uses ``cuda:LOCAL_RANK``) and gloo on the CPU.
    """
    device = torch.device(device)
    if _env_int("WORLD_SIZE", 1) <= 1 or is_distributed():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", _env_int("LOCAL_RANK", 0))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    elif device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise ValueError(f"device '{device}': several processes train on cpu (gloo) or cuda (nccl) only")
    return device


def shutdown() -> None:
    """Leave the process group (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        # gloo's worker threads may still be releasing the tensors of the last collective, which needs the GIL,
        # while the process group's destructor joins them holding the GIL (a deadlock seen here after
        # all_gather_object; pytorch/pytorch#56297): give them the GIL first
        time.sleep(0.5)
        dist.destroy_process_group()


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the process that writes the run folder, checkpoints and logs."""
    return rank() == 0


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (what other ranks pass is ignored)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Overwrite the persistent buffers of ``module`` (those in its ``state_dict``) with rank ``src``'s, in place.

    Non-persistent buffers (e.g. a graph's edge list) are the same everywhere by construction and are skipped.
    """
    if not is_distributed():
        return
    persistent = set(module.state_dict(keep_vars=True))
    for name, buffer in module.named_buffers():
        if name in persistent:
            dist.broadcast(buffer.data, src=src)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64; one collective for the whole list)."""
    if not is_distributed() or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
