"""Task ``diffusion-distill``: train a student noise predictor from a frozen teacher (output + feature distillation).

As in the SD distillation work A-SDM builds on (BK-SDM, Kim et al., https://arxiv.org/abs/2305.15798), per batch

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,         y' = y, or the null label with prob. class_dropout
    loss = w_noise   || eps_S(x_t, t, y') - eps ||^2                         (the usual DDPM loss)
         + w_teacher || eps_S(x_t, t, y') - eps_T(x_t, t, y') ||^2           (output distillation)
         + w_feature mean_k || f_S^k - f_T^k ||^2                            (feature distillation)

with ``f^k`` the matched block outputs both models return with ``forward(..., return_features=True)`` (for the
UNet: every level's output) and each squared norm a mean over elements. Batches and their draws of
``(t, eps, drop)`` are the ``diffusion`` task's (same seeded generator, saved for resume). Evaluation:
``mse`` (noise MSE against the true noise, the judging metric, minimised, as in the ``diffusion`` task) and
``teacher_mse`` (against the teacher's prediction), on ``eval_draws`` fixed draws per image.

The teacher is read from a run folder (``teacher_run``: its ``config.yaml`` names the model and its shape,
``best.pt`` holds the weights, read with ``weights_only=True``); an empty ``teacher_run`` builds an *untrained*
``UNet`` from ``model/UNet.yaml`` updated by ``teacher_overrides`` (seeded by ``seed``) - for tests and smoke
runs only. The loss of every step
is kept in ``step_losses`` and its three terms in ``step_terms`` (loss-vs-step curves; not part of the
resumable state).

Keys (defaults in the student's ``model/<Model>.yaml``): teacher_run, teacher_overrides, distill_noise_weight,
distill_teacher_weight, distill_feature_weight; plus the ``diffusion`` task's keys.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from graphattn.config import load_yaml
from graphattn.registry import get_model
from graphattn.training import find_checkpoint, load_checkpoint

from .base import DiffusionModel
from .data import DiffusionData
from .task import DiffusionTask

__all__ = ["DistillTask", "load_teacher", "distill_losses"]

_HERE = Path(__file__).resolve().parent
_MATCHED = ("timesteps", "noise_schedule", "image_size")


def load_teacher(config: Mapping[str, Any], data: DiffusionData) -> tuple[DiffusionModel, dict[str, Any]]:
    """The frozen teacher of ``config["teacher_run"]`` in eval mode, and the config it was built from (a dict)."""
    run = str(config["teacher_run"])
    if not run:
        overrides = dict(config["teacher_overrides"])
        tcfg = {**load_yaml(_HERE / "model" / "UNet.yaml"), "model": "UNet", **{k: config[k] for k in _MATCHED}}
        unknown = sorted(set(overrides) - set(tcfg))
        if unknown:
            raise ValueError(f"teacher_overrides: unknown UNet key(s) {unknown}; known: {sorted(tcfg)}")
        tcfg.update(overrides)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config["seed"]))
            teacher = get_model("UNet")(tcfg, data)
        return teacher.eval().requires_grad_(False), tcfg
    folder = Path(run)
    cfg_file = folder / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"teacher_run: '{folder}' has no config.yaml; expected a run folder written by run.py "
                                "(e.g. saved/UNet-digits16-diffusion-<time>)")
    tcfg = load_yaml(cfg_file)
    if "model" not in tcfg:
        raise ValueError(f"teacher_run: {cfg_file} names no model")
    for key in _MATCHED:
        if key in tcfg and tcfg[key] != config[key]:
            raise ValueError(f"teacher_run: the teacher was trained with {key} = {tcfg[key]!r} ({cfg_file}) but this "
                             f"run has {key} = {config[key]!r}; set --{key}={tcfg[key]!r}")
    teacher = get_model(str(tcfg["model"]))(tcfg, data)
    if not isinstance(teacher, DiffusionModel):
        raise TypeError(f"teacher_run: model '{tcfg['model']}' of {cfg_file} is not a diffusion model")
    state = load_checkpoint(find_checkpoint(folder, "best.pt"))
    try:
        teacher.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"teacher_run: {folder}/best.pt does not fit the model its config.yaml describes: "
                         f"{str(exc).splitlines()[0]}") from None
    return teacher.eval().requires_grad_(False), tcfg


def distill_losses(student: DiffusionModel, teacher: DiffusionModel, x_t, t, y, noise) -> dict[str, torch.Tensor]:
    """The three terms of the module docstring (each a scalar tensor; gradients flow into ``student`` only)."""
    with torch.no_grad():
        eps_t, feats_t = teacher(x_t, t, y, return_features=True)
    eps_s, feats_s = student(x_t, t, y, return_features=True)
    if len(feats_s) != len(feats_t) or any(a.shape != b.shape for a, b in zip(feats_s, feats_t)):
        raise ValueError(f"feature distillation: student features {[tuple(f.shape) for f in feats_s]} do not match "
                         f"the teacher's {[tuple(f.shape) for f in feats_t]}")
    feature = torch.stack([F.mse_loss(a, b) for a, b in zip(feats_s, feats_t)]).mean()
    return {"noise_mse": F.mse_loss(eps_s, noise), "teacher_mse": F.mse_loss(eps_s, eps_t), "feature_mse": feature}


class DistillTask(DiffusionTask):
    __doc__ = __doc__
    task_name = "diffusion-distill"

    def __init__(self, config: Mapping[str, Any], data: DiffusionData | None = None) -> None:
        super().__init__(config, data)
        self.weights = {name: float(config[f"distill_{name}_weight"]) for name in ("noise", "teacher", "feature")}
        if min(self.weights.values()) < 0 or sum(self.weights.values()) == 0:
            raise ValueError(f"distill_*_weight: expected weights >= 0, not all 0; got {self.weights}")
        self.teacher, self.teacher_config = load_teacher(config, self.data)
        self.step_losses: list[float] = []
        self.step_terms: list[dict[str, float]] = []

    def setup(self, model, device) -> None:
        super().setup(model, device)
        self.teacher.to(device)

    def metric_names(self) -> list[str]:
        return ["mse", "teacher_mse"]

    def _terms(self, model: DiffusionModel, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        y = torch.where(batch["drop"], torch.full_like(batch["y"], model.null_class), batch["y"])
        x_t = model.schedule.q_sample(batch["x"], batch["t"], batch["noise"])
        return distill_losses(model, self.teacher, x_t, batch["t"], y, batch["noise"])

    def loss(self, model: DiffusionModel, batch, phase: str):
        terms = self._terms(model, batch)
        w = self.weights
        loss = (w["noise"] * terms["noise_mse"] + w["teacher"] * terms["teacher_mse"]
                + w["feature"] * terms["feature_mse"])
        parts = {k: float(v.detach()) for k, v in terms.items()}
        self.step_losses.append(float(loss.detach()))
        self.step_terms.append(parts)
        return loss, parts

    @torch.no_grad()
    def evaluate(self, model: DiffusionModel, split: str) -> dict[str, float]:
        sums, count = {"mse": 0.0, "teacher_mse": 0.0}, 0
        for batch in self.eval_batches(split):
            x_t = model.schedule.q_sample(batch["x"], batch["t"], batch["noise"])
            eps_s = model(x_t, batch["t"], batch["y"])
            eps_t = self.teacher(x_t, batch["t"], batch["y"])
            n = len(batch["y"])
            sums["mse"] += float(F.mse_loss(eps_s, batch["noise"])) * n
            sums["teacher_mse"] += float(F.mse_loss(eps_s, eps_t)) * n
            count += n
        return {k: v / count for k, v in sums.items()}
