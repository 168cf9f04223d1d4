"""The recommendation trainer: alternating phases, full-ranking evaluation, early stopping, resume.

One epoch runs each of the model's phases in order (``cf`` then ``kg`` for KGAT), each over its own sampler
with its own optimizer, then the model's ``on_epoch_end`` (KGAT's attention refresh). Every ``eval_step``
epochs the validation split is ranked against all items (training items excluded); the best epoch by
``valid_metric`` is checkpointed and, after early stopping or the last epoch, evaluated on the test split
(training and validation items excluded).
"""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch

from graphattn.registry import get_dataset, get_model
from graphattn.train import EarlyStopping, RunDir, find_checkpoint, load_checkpoint, progress, resolve_device

from .evaluation import FullRankEvaluator


def _to_tensors(batch, device):
    if isinstance(batch, np.ndarray):
        return torch.as_tensor(batch, dtype=torch.long, device=device)
    return tuple(_to_tensors(b, device) for b in batch)


def build_evaluator(config: Mapping) -> FullRankEvaluator:
    return FullRankEvaluator(topk=config["topk"], metrics=config["metrics"], backend=config["eval_backend"],
                             faiss_index=config["faiss_index"], chunk_size=config["eval_batch_size"])


@torch.no_grad()
def evaluate(model, data, split: str, evaluator: FullRankEvaluator) -> dict[str, float]:
    """Full-ranking metrics on ``split`` ("valid" or "test"), excluding the items of earlier splits."""
    model.eval()
    user_emb, item_emb = model.full_sort_embeddings()
    exclude = [data.csr("train")] + ([data.csr("valid")] if split == "test" and len(data.valid) else [])
    return evaluator.evaluate(user_emb.float().cpu(), item_emb.float().cpu(), data.csr(split), exclude)


def train_epoch(model, samplers, optimizers, device, show_progress: bool) -> dict[str, float]:
    """One epoch of every phase; returns mean losses (and their parts) per phase and the phase times."""
    model.train()
    logs: dict[str, float] = {}
    for phase in model.phases:
        sampler, opt = samplers.get(phase), optimizers[phase]
        if sampler is None:
            continue
        t0, total, parts_sum, n = time.perf_counter(), 0.0, {}, 0
        for batch in progress(sampler, desc=phase, enabled=show_progress, leave=False, total=len(sampler)):
            loss, parts = model.training_step(phase, _to_tensors(batch, device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            n += 1
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
        logs[f"{phase}_loss"] = total / max(n, 1)
        logs.update({f"{phase}_{k}": v / max(n, 1) for k, v in parts_sum.items()})
        logs[f"{phase}_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.on_epoch_end()
    logs["epoch_end_seconds"] = time.perf_counter() - t0
    return logs


def load_data(config: Mapping):
    """The dataset named (or the folder given) by ``config["dataset"]``, with ``use_kg`` / ``kg_min_degree``
    applied (:meth:`RecDataset.filter_kg`)."""
    entry = get_dataset(config["dataset"], "recsys")
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if entry.is_path:
        from .data import load_dataset
        data = load_dataset(entry.name, config)
    else:
        data = entry.loader(config)
    return data.filter_kg(bool(config.get("use_kg", True)), int(config.get("kg_min_degree", 0)))


def train(config: Mapping, run: RunDir) -> dict[str, float]:
    """Train ``config["model"]`` on ``config["dataset"]``; return the test metrics of the best epoch."""
    return fit(config, run)[0]


def fit(config: Mapping, run: RunDir):
    """Like :func:`train`, returning ``(test_metrics, model, data)`` (the model holds the best epoch)."""
    log = run.logger
    device = resolve_device(config["device"])
    data = load_data(config)
    log.info("dataset %s", data)
    model = get_model(config["model"])(config, data).to(device)
    log.info("model %s: %d parameters", config["model"], sum(p.numel() for p in model.parameters()))
    optimizers = model.optimizers(config)
    samplers = model.samplers(config, data, int(config["seed"]))
    evaluator = build_evaluator(config)
    valid_split = "valid" if len(data.valid) else "test"
    if valid_split == "test":
        log.warning("no validation split: model selection uses the test split (as the official KGAT code does)")
    stopper = EarlyStopping(config["stopping_step"], mode="max")
    start = 0
    if config["resume"]:
        state = load_checkpoint(find_checkpoint(config["resume"]))
        model.load_state_dict(state["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        stopper.load_state_dict(state["stopper"])
        for name, sampler_state in state.get("samplers", {}).items():
            if name in samplers and hasattr(samplers[name], "rng"):
                samplers[name].rng.bit_generator.state = _unjson_rng(sampler_state)
        start = int(state["epoch"]) + 1
        log.info("resumed from epoch %d", start)

    metric = config["valid_metric"]
    for epoch in range(start, config["epochs"]):
        logs = train_epoch(model, samplers, optimizers, device, config["show_progress"])
        run.log_train(epoch, **logs)
        evaluated = (epoch + 1) % config["eval_step"] == 0 or epoch + 1 == config["epochs"]
        if evaluated:
            t0 = time.perf_counter()
            result = evaluate(model, data, valid_split, evaluator)
            result["eval_seconds"] = time.perf_counter() - t0
            if metric not in result:
                raise ValueError(f"valid_metric '{metric}' is not computed; available: {sorted(result)}")
            run.log_metrics(epoch, valid_split, result)
            if stopper.step(result[metric]):
                run.save_checkpoint({"model": model.state_dict(), "epoch": epoch}, "best.pt")
        run.save_checkpoint({"model": model.state_dict(), "epoch": epoch, "stopper": stopper.state_dict(),
                             "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                             "samplers": {k: _json_rng(s.rng) for k, s in samplers.items() if hasattr(s, "rng")}},
                            "last.pt")
        if evaluated and stopper.should_stop:
            log.info("early stop at epoch %d: %s did not improve for %d evaluations", epoch, metric,
                     config["stopping_step"])
            break

    best = run.path / "best.pt"
    if best.is_file():
        model.load_state_dict(load_checkpoint(best)["model"])
    test = evaluate(model, data, "test", evaluator)
    run.log_test(test)
    run.plot_curves()
    return test, model, data


def _json_rng(rng: np.random.Generator) -> dict:
    state = rng.bit_generator.state
    return {"bit_generator": state["bit_generator"], "s": str(state["state"]["state"]),
            "inc": str(state["state"]["inc"]), "has_uint32": state["has_uint32"], "uinteger": state["uinteger"]}


def _unjson_rng(saved: Mapping) -> dict:
    return {"bit_generator": saved["bit_generator"], "state": {"state": int(saved["s"]), "inc": int(saved["inc"])},
            "has_uint32": saved["has_uint32"], "uinteger": saved["uinteger"]}
