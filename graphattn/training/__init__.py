"""Training: the one :class:`Trainer`, the :class:`Task` interface a domain implements, and the pieces
they are made of (run folders, checkpoints, early stopping, optimisers and schedules, seeding, progress)."""

from .optim import OPTIMIZERS, SCHEDULERS, StepSchedule, build_optimizer, lr_factor
from .report import format_metrics_table, progress
from .rundir import MemoryRun, RunDir, find_checkpoint, load_checkpoint
from .runtime import (capture_rng_state, generator_state, resolve_device, restore_rng_state, seed_everything,
                      set_generator_state)
from .stopping import EarlyStopping
from .task import SizedBatches, Task
from .trainer import Trainer, move_to

__all__ = [
    "Trainer", "Task", "SizedBatches", "move_to",
    "RunDir", "MemoryRun", "load_checkpoint", "find_checkpoint",
    "EarlyStopping",
    "build_optimizer", "lr_factor", "StepSchedule", "OPTIMIZERS", "SCHEDULERS",
    "seed_everything", "resolve_device", "capture_rng_state", "restore_rng_state", "generator_state",
    "set_generator_state",
    "progress", "format_metrics_table",
]
