"""Contracts for every registered model of every domain, parametrised over the registry.

Each model has a tiny run below (dataset + overrides that make it take seconds). For each:
- the run trains through the one Trainer, every training loss is finite and every parameter that requires
  a gradient receives one on the first batch;
- a run interrupted (Ctrl-C) during epoch 2 and resumed gives exactly the uninterrupted run: the same test
  metrics, weights, optimiser state, early-stopping state, step counters and the task's generators.

A model registered without an entry in ``TINY_RUNS`` fails ``test_every_registered_model_has_a_tiny_run``:
add one when you register a model (docs/adding-a-model.md).
"""
import math

import pytest
import torch

import recsys  # noqa: F401
import sequence  # noqa: F401
import vision  # noqa: F401
from graphattn.config import Config
from graphattn.registry import list_models
from graphattn.training import RunDir, Trainer, move_to

PLANTED = {"planted_kg": {"n_users": 40, "n_items": 60, "n_clusters": 4, "n_noise_entities": 15},
           "train_batch_size": 64, "embedding_size": 8, "kg_embedding_size": 8}
MTL = {"synthetic_samples": 600, "train_batch_size": 128, "embedding_size": 4}
DRIFT = {"drift_n_users": 40, "drift_n_clusters": 4, "drift_cluster_size": 4, "drift_n_steps": 16,
         "drift_max_history": 10, "embedding_size": 8, "max_len": 6, "train_batch_size": 32}
DIGITS = {"train_batch_size": 256}
SKELETON = {"interaction_train_size": 48, "interaction_valid_size": 16, "interaction_test_size": 16,
            "interaction_frames": 20, "train_batch_size": 16}

TINY_RUNS = {
    "BPRMF": ("planted-kg", PLANTED),
    "CKE": ("planted-kg", PLANTED),
    "KGAT": ("planted-kg", {**PLANTED, "layers": [8, 8], "mess_dropout": [0.1, 0.1]}),
    "SharedBottom": ("mtl-synthetic", MTL),
    "MMoE": ("mtl-synthetic", MTL),
    "INFNet": ("mtl-synthetic", MTL),
    "TargetAttention": ("mtl-synthetic", MTL),
    "SASRec": ("drifting-interest", DRIFT),
    "GRU4Rec": ("drifting-interest", DRIFT),
    "IDNP": ("drifting-interest", {**DRIFT, "time_dim": 8, "latent_dim": 8}),
    "DependencyViT": ("digits", {**DIGITS, "depth": 2, "embed_dim": 16, "num_heads": 2}),
    "NAViT": ("digits", DIGITS),
    "MoHViT": ("digits", DIGITS),
    "CARENano": ("digits", {**DIGITS, "image_size": 32}),
    "TCPA": ("digits", {**DIGITS, "vit_depth": 1, "vit_dim": 16, "vit_heads": 2}),
    "OverLoCK": ("digits", {**DIGITS, "image_size": 16}),
    "DiT": ("digits-diffusion", {"train_batch_size": 256, "hidden_size": 16, "num_layers": 2, "num_heads": 2, "timesteps": 20}),
    "UNet": ("digits16-diffusion", {"train_batch_size": 512, "image_size": 8, "timesteps": 20, "unet_channels": [8, 16], "context_dim": 8, "eval_draws": 1}),
    "ASDMStudent": ("digits16-diffusion", {"train_batch_size": 512, "image_size": 8, "timesteps": 20, "eval_draws": 1, "teacher_overrides": {"unet_channels": [8, 16], "context_dim": 8}}),
    "ISTANet": ("skeleton-interaction", SKELETON),
    "LateFusionSkeleton": ("skeleton-interaction", SKELETON),
    "IMPN": ("gaze_objects", {"num_train": 40, "num_valid": 20, "num_test": 20}),
    "MANIQA": ("iqa_synthetic", {"train_batch_size": 64, "cnn_widths": [8, 8, 8], "maniqa_dims": [16, 8]}),
    "SABGrounding": ("shapes_grounding", {"num_train": 64, "num_valid": 32, "num_test": 32, "train_batch_size": 32}),
    "PointerNet": ("convex-hull", {"train_size": 64, "valid_size": 16, "test_size": 16, "n_min": 4, "n_max": 6,
                                   "test_n": 6, "hidden_size": 8, "train_batch_size": 16}),
    "DSFMixer": ("mqar", {"train_size": 64, "valid_size": 16, "test_size": 16, "vocab_size": 40, "seq_len": 16,
                          "num_kv_pairs": 2, "d_model": 16, "state_expansion": 4, "train_batch_size": 16}),
    "BiLSTMAttn": ("planted-cue", {"train_size": 64, "valid_size": 16, "test_size": 16, "cue_max_len": 24,
                                   "embedding_size": 8, "hidden_size": 8, "attention_size": 8, "at_mode": "iat"}),
    "CLSTransformer": ("planted-cue", {"train_size": 64, "valid_size": 16, "test_size": 16, "cue_max_len": 24,
                                       "embedding_size": 8, "ffn_size": 8, "at_mode": "rp"}),
    "InteractCompPolicy": ("interactcomp", {"num_entities": 90, "num_domains": 3, "train_items": 40, "valid_items": 10,
                                            "test_items": 10, "hidden_size": 16, "num_heads": 2, "num_layers": 1}),
    "ICLRegression": ("icl-regression", {"steps_per_epoch": 5, "train_batch_size": 16, "icl_valid_size": 32,
                                         "icl_test_size": 32}),
    "InductionNet": ("icl-bursty", {"steps_per_epoch": 5, "train_batch_size": 16, "icl_classes": 32, "icl_labels": 8,
                                    "icl_pairs": 4, "icl_item_dim": 15, "icl_max_pairs": 4, "icl_valid_size": 32,
                                    "icl_test_size": 32}),
    "InductionMinimal": ("icl-bursty", {"steps_per_epoch": 5, "train_batch_size": 16, "icl_classes": 32, "icl_labels": 8, "icl_pairs": 4, "icl_item_dim": 15, "icl_max_pairs": 4, "icl_valid_size": 32, "icl_test_size": 32, "icl_minimal_inweights": True}),
    "CircuitGPT": ("circuit-mix", {"steps_per_epoch": 3, "train_batch_size": 8, "circ_valid_size": 8,
                                   "circ_test_size": 8, "circ_layers": 1, "circ_heads": 2, "circ_dim": 16}),
    "DeconLM": ("pcfg-lm", {"steps_per_epoch": 3, "train_batch_size": 4, "pcfg_train_tokens": 400, "pcfg_eval_tokens": 100, "lm_context": 16, "decon_layers": 2, "decon_dim": 16, "decon_heads": 2, "decon_ffn": 16, "decon_variant": "rndembqk", "decon_config": "hybrid"}),
}

MODELS = list_models()


def _config(name, tmp_path, **over):
    dataset, tiny = TINY_RUNS[name]
    known = Config(name, dataset)
    values = {**tiny, "epochs": 2, "eval_step": 1, "show_progress": False, "device": "cpu", "seed": 1,
              "checkpoint_dir": str(tmp_path), "log_level": "WARNING", **over}
    unknown = sorted(k for k in values if k not in known)
    assert not unknown, f"TINY_RUNS[{name!r}] sets keys the config does not know: {unknown}"
    return Config(name, dataset, config_dict=values)


def test_every_registered_model_has_a_tiny_run():
    missing = sorted(set(MODELS) - set(TINY_RUNS))
    assert not missing, f"registered models without a tiny run in tests/contracts/test_every_model.py: {missing}"


def _run(config, folder=None, interrupt_at_epoch=None):
    """Train as ``run.py`` would; with ``interrupt_at_epoch`` a Ctrl-C arrives when that epoch asks for its batches."""
    with (RunDir.open(folder, config) if folder else RunDir.create(config)) as run:
        trainer = Trainer.from_config(config, run)
        if interrupt_at_epoch is not None:
            batches = trainer.task.batches

            def interrupting(phase):
                if trainer.epoch + 1 == interrupt_at_epoch:
                    raise KeyboardInterrupt
                return batches(phase)

            trainer.task.batches = interrupting
            with pytest.raises(KeyboardInterrupt):
                trainer.fit()
            return None, trainer, run.path
        return trainer.fit(), trainer, run.path


@pytest.mark.parametrize("name", MODELS)
def test_first_batch_gives_a_finite_loss_and_a_gradient_to_every_parameter(name, tmp_path):
    if name not in TINY_RUNS:
        pytest.skip("no tiny run (see test_every_registered_model_has_a_tiny_run)")
    config = _config(name, tmp_path)
    trainer = Trainer.from_config(config)
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    for phase in trainer.task.phases:                    # gradients of all phases accumulate
        batch = move_to(next(iter(trainer.task.batches(phase))), trainer.device)
        loss, parts = trainer.task.loss(trainer.model, batch, phase)
        assert loss.dim() == 0 and math.isfinite(loss.item()), (phase, loss)
        assert all(math.isfinite(float(v)) for v in parts.values()), parts
        loss.backward()
    frozen = getattr(trainer.model, "untrained_parameters", lambda: set())()
    missing = [n for n, p in trainer.model.named_parameters() if p.requires_grad and p.grad is None and n not in frozen]
    assert not missing, f"{name}: parameters without a gradient after one batch of every phase: {missing}"


@pytest.mark.parametrize("name", MODELS)
def test_resuming_an_interrupted_run_equals_the_uninterrupted_run(name, tmp_path):
    if name not in TINY_RUNS:
        pytest.skip("no tiny run (see test_every_registered_model_has_a_tiny_run)")
    straight, a, _ = _run(_config(name, tmp_path))
    _, _, folder = _run(_config(name, tmp_path), interrupt_at_epoch=2)
    resumed, b, _ = _run(_config(name, tmp_path, resume=str(folder)), folder)
    assert resumed.keys() == straight.keys()
    for key, value in straight.items():                  # NaN (an undefined metric on tiny data) equals NaN
        assert value == resumed[key] or (math.isnan(value) and math.isnan(resumed[key])), (key, value, resumed[key])
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    assert (sa["epoch"], sa["step"], sa["best_epoch"], sa["stopper"]) == (sb["epoch"], sb["step"], sb["best_epoch"], sb["stopper"])
    assert repr(sa["task"]) == repr(sb["task"])
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    for phase, opt in sa["optimizers"].items():
        for pid, state in opt["state"].items():
            for k, v in state.items():
                other = sb["optimizers"][phase]["state"][pid][k]
                assert torch.equal(v, other) if torch.is_tensor(v) else v == other, (phase, pid, k)
