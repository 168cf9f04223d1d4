"""Seeding, device choice and the random generators' state (checkpoint-safe)."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "resolve_device", "capture_rng_state", "restore_rng_state", "generator_state",
           "set_generator_state"]


def seed_everything(seed: int, reproducibility: bool = True) -> None:
    """Seed python's ``random``, numpy and torch (all devices), and choose deterministic kernels or not.

    With ``reproducibility`` a run repeats bit for bit with the same seed. On CPU that holds by construction:
    the framework's sparse reductions (``index_add``, CSR products, ``scatter_reduce``) are deterministic
    with any number of threads, and hot paths gather with ``index_select`` instead of advanced indexing
    (whose backward accumulates across threads in a varying order). PyTorch's global deterministic mode is
    not switched on for CPU-only machines: measured on KGAT / ml-100k it doubled the epoch time
    (``bench/kgat.py --reproducibility_cost``: x1.96). Where CUDA is present it is switched on
    (``torch.use_deterministic_algorithms(warn_only=True)``, a fixed cuBLAS workspace) and cuDNN stops
    autotuning; an op without a deterministic CUDA kernel warns, naming the op. Without ``reproducibility``
    the fastest kernels are used and cuDNN autotunes.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = bool(reproducibility)
    torch.backends.cudnn.benchmark = not reproducibility
    on_gpu = bool(reproducibility) and torch.cuda.is_available()
    if on_gpu:
        # cuBLAS needs a fixed workspace for deterministic results; read when cuBLAS first starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on_gpu, warn_only=True)


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` as given.

    Asking for an accelerator that is not there is a ``ValueError`` rather than a later crash.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise TypeError(f"device must be a str such as 'auto', 'cpu' or 'cuda', got {type(name).__name__}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' requested but CUDA is not available here; use device: cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device '{name}' requested but MPS is not available here; use device: cpu or auto")
    elif device.type != "cpu":
        raise ValueError(f"device: expected auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return device


def capture_rng_state() -> dict[str, Any]:
    """Random generator states of python, numpy and torch, as tensors and numbers (checkpoint-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy ``Generator``'s state as checkpoint-safe values (its 128-bit integers as decimal strings)."""
    state = rng.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": {k: str(v) for k, v in state["state"].items()},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def set_generator_state(rng: np.random.Generator, saved: dict[str, Any]) -> None:
    """Inverse of :func:`generator_state`."""
    if saved.get("bit_generator") != rng.bit_generator.state["bit_generator"]:
        raise ValueError(f"saved generator state is for {saved.get('bit_generator')!r}, "
                         f"this generator is {rng.bit_generator.state['bit_generator']!r}")
    rng.bit_generator.state = {
        "bit_generator": saved["bit_generator"],
        "state": {k: int(v) for k, v in saved["state"].items()},
        "has_uint32": int(saved["has_uint32"]),
        "uinteger": int(saved["uinteger"]),
    }
