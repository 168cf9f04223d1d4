"""Dynamic Prompt Learning miniature: cross-attention leakage on two-digit scenes, before and after DPL (issue #16).

A caption-conditioned denoiser (:class:`vision.diffusion.dpl.SceneDenoiser`: adaLN-Zero on the step, the caption
only through cross-attention) is trained through the Trainer (Min-SNR-5 loss weighting, label dropout 0.1; cached
under ``results/dpl/`` keyed by its settings) on 12 x 24 scenes of two digits (a left, b right; centred in their
halves with ``--positions fixed``, random offsets otherwise) captioned ``[sot, a, left, b, right, eot]``, and
sampled with classifier-free guidance ``--guidance``; samples from noise are judged per box where they put their
digits (:func:`locate_boxes`). ``experiments/dpl_diagnose.py`` explains the settings. Held-out test scenes are
DDIM-inverted; per step, null-text inversion (baseline) or DPL then null-text inversion gives the source pass.
Leakage of the two noun tokens' cross-attention maps (conditional pass; mean over heads, layers and steps) is
measured on the source pass with the plain words and with DPL's per-step optimised placeholders. Word-swap
edit proxy (Prompt-to-Prompt): digit a is replaced by another class a', the source pass's cross-attention
maps are replayed for the first ``--cross-replace`` of the steps (and self-attention maps for
``--self-replace``); the CNN judge reads each 8x8 box: box 1 should become a', box 2 should stay what it was,
and box 2 / background pixels should not change. A diagnostic compares the noise-prediction MSE with the
right and with shuffled captions (does the denoiser use its caption at all?).

    .venv/bin/python experiments/dpl.py [--epochs 12] [--scenes 64] [--positions fixed] [--snr-gamma 5] [--publish]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vision.diffusion  # noqa: E402,F401
from graphattn.config import Config  # noqa: E402
from graphattn.io import atomic_open  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import MemoryRun, Trainer  # noqa: E402
from vision.diffusion import judge as J  # noqa: E402
from vision.diffusion.dpl import (PLACEHOLDERS, SceneDenoiser, SceneTask, box_masks, crop, cross_maps,  # noqa: E402
                                  ddim_invert, denoise, dynamic_prompt_learning, leakage, locate_boxes, scene_data, splice)
from vision.diffusion.task import DiffusionTask  # noqa: E402

SCRIPT = "dpl"


def tiles(images: torch.Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """(N, 1, h, w) in [-1, 1] -> one grey-separated array in [0, 1] (rectangular images)."""
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    rows = -(-n // nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), 0.5, dtype=np.float32)
    arr = (images.detach().clamp(-1, 1).numpy()[:, 0] + 1) / 2
    for i in range(n):
        r, c = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[i]
    return out


def step_leakage(model, store, objects, background, per_step: int) -> dict[str, float]:
    """Leakage measures of the conditional calls (the first of ``per_step`` calls per step), averaged over
    scenes and steps of one recorded pass."""
    names = model.cross_names()
    per = [leakage(cross_maps(store, names, k), objects, background) for k in range(0, len(store[names[0]]), per_step)]
    return {m: float(torch.stack([p[m] for p in per]).mean()) for m in per[0]}


def edit_metrics(judge, source, edited, boxes, objects_px, a_new) -> dict[str, float]:
    b_src = judge(crop(source, boxes, 1).clamp(-1, 1)).argmax(-1)
    diff = (edited - source).abs()[:, 0]                                   # (n, H, W)
    box1, box2 = objects_px[:, 0], objects_px[:, 1]
    bg = 1 - box1 - box2
    region = lambda m: float(((diff * m).flatten(1).sum(1) / m.flatten(1).sum(1)).mean())   # noqa: E731
    return {"swap_success": float(J.accuracy(judge, crop(edited, boxes, 0), a_new).mean()),
            "object2_kept": float(J.accuracy(judge, crop(edited, boxes, 1), b_src).mean()),
            "change_box1": region(box1), "change_box2": region(box2), "change_background": region(bg)}


def make_config(epochs: int, lr: float, seed: int) -> Config:
    """The denoiser's training config (the diffusion task's keys; label dropout 0.1 for guidance)."""
    return Config("DiT", "digits-diffusion", config_dict={
        "epochs": epochs, "learning_rate": lr, "class_dropout": 0.1, "warmup_epochs": 1,
        "eval_step": epochs, "show_progress": True, "device": "cpu", "seed": seed, "log_level": "INFO"})


def denoiser_cache(folder: Path, variant: str, positions: str, epochs: int, lr: float, train_scenes: int,
                   seed: int, snr_gamma: float | None = None) -> tuple[Path, dict]:
    """Where a trained denoiser is cached and the settings it is keyed by (shared with dpl_diagnose.py)."""
    key = {"variant": variant, "positions": positions, "epochs": epochs, "lr": lr, "train_scenes": train_scenes,
           "seed": seed, "version": 3}
    name = f"denoiser_{variant}_{positions}_{epochs}"
    if snr_gamma is not None:
        key["snr_gamma"] = snr_gamma
        name += f"_snr{snr_gamma:g}"
    return folder / name, key


def train_or_load(config, scenes, model, prefix: Path, key: dict, snr_gamma: float | None = None):
    """Train ``model`` through the Trainer, or load it from ``prefix``.pt when ``prefix``.json holds the same
    ``key``. Returns (model, {"test_mse", "seconds"})."""
    cache, meta_path = prefix.with_suffix(".pt"), prefix.with_suffix(".json")
    if cache.exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
        print(f"loaded the denoiser from {cache}")
        return model, json.loads(meta_path.read_text())["train"]
    t0 = time.time()
    trainer = Trainer(config, SceneTask(config, scenes, snr_gamma), model, run=MemoryRun())
    test = trainer.fit()
    info = {"test_mse": test["mse"], "seconds": round(time.time() - t0, 1)}
    with atomic_open(cache) as f:
        torch.save(trainer.model.state_dict(), f)
    with atomic_open(meta_path, "w") as f:
        f.write(json.dumps({"key": key, "train": info}))
    print(f"trained the denoiser: test mse {test['mse']:.4f} in {info['seconds']} s")
    return trainer.model, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=12, help="denoiser training epochs")
    p.add_argument("--train-scenes", type=int, default=4000)
    p.add_argument("--scenes", type=int, default=64, help="held-out test scenes to edit")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (inversion, DPL and editing)")
    p.add_argument("--inner", type=int, default=20, help="DPL: max AdamW updates per step")
    p.add_argument("--lr", type=float, default=0.05, help="DPL: AdamW learning rate of the placeholders")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale of sampling and editing")
    p.add_argument("--null-inner", type=int, default=10, help="null-text inversion: Adam updates per step")
    p.add_argument("--null-lr", type=float, default=0.05, help="null-text inversion: Adam learning rate")
    p.add_argument("--cross-replace", type=float, default=0.8, help="P2P: fraction of steps with source cross maps")
    p.add_argument("--self-replace", type=float, default=0.4, help="P2P: fraction of steps with source self maps")
    p.add_argument("--p2p-sweep", nargs="*", default=["0.4:0.0", "0.2:0.0"],
                   help="further P2P settings 'cross:self' (fractions of steps) reported for plain words and DPL")
    p.add_argument("--train-lr", type=float, default=3e-3, help="denoiser learning rate")
    p.add_argument("--snr-gamma", type=float, default=5.0, help="denoiser: Min-SNR-gamma loss weighting (<= 0: plain MSE)")
    p.add_argument("--conditioning", default="adaln", choices=("adaln", "adaln-pooled", "additive"),
                   help="how the step (and, adaln-pooled, the pooled nouns) condition the blocks")
    p.add_argument("--positions", default="fixed", choices=("random", "fixed"), help="digit corners in their halves")
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p, SCRIPT)
    args = p.parse_args()
    if args.snr_gamma is not None and args.snr_gamma <= 0:
        args.snr_gamma = None
    torch.set_num_threads(1)
    out = Results.from_args(SCRIPT, args)
    t_start = time.time()
    torch.manual_seed(args.seed)

    config = make_config(args.epochs, args.train_lr, args.seed)
    digits = DiffusionTask(config).data
    scenes = scene_data(digits, {"train": args.train_scenes, "valid": 256, "test": max(256, args.scenes)}, args.seed,
                        args.positions)
    torch.manual_seed(args.seed)
    model = SceneDenoiser(config, scenes, conditioning=args.conditioning)
    prefix, key = denoiser_cache(out.dir, args.conditioning, args.positions, args.epochs, args.train_lr,
                                 args.train_scenes, args.seed, args.snr_gamma)
    model, train_info = train_or_load(config, scenes, model, prefix, key, args.snr_gamma)
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    judge = J.load_or_train_judge(out.dir / "judge_cnn.pt", "cnn", *digits["train"], seed=0)

    n = args.scenes
    x0, y = (v[:n] for v in scenes["test"])
    boxes = scenes.meta["boxes"]["test"][:n]
    objects, background = box_masks(boxes)
    objects_px, _ = box_masks(boxes, patch=1)
    objects_px = objects_px.view(n, 2, *x0.shape[-2:])
    a, b = y // 10, y % 10
    g = torch.Generator().manual_seed(1000 + args.seed)
    a_new = (a + torch.randint(1, 10, (n,), generator=g)) % 10
    y_new = a_new * 10 + b

    w, per_step = args.guidance, (1 if args.guidance == 1.0 else 2)
    # generation sanity: samples from noise with the test captions, each box judged
    x_gen = denoise(model, torch.randn(x0.shape, generator=g), y, args.steps, guidance=w)
    at = locate_boxes(x_gen, args.positions)                                 # where each sample put its digits
    gen = {"box1": float(J.accuracy(judge, crop(x_gen, at, 0), a).mean()),
           "box2": float(J.accuracy(judge, crop(x_gen, at, 1), b).mean())}
    real = {"box1": float(J.accuracy(judge, crop(x0, boxes, 0), a).mean()),
            "box2": float(J.accuracy(judge, crop(x0, boxes, 1), b).mean())}

    # does the denoiser use its caption? noise-prediction MSE with the right vs shuffled captions
    with torch.no_grad():
        xs, ys = scenes["test"]
        caption_use = {}
        for t in (60, 100, 140):
            tt = torch.full((len(ys),), t)
            noise = torch.randn(xs.shape, generator=g)
            x_t = model.schedule.q_sample(xs, tt, noise)
            right = float(((model(x_t, tt, ys) - noise) ** 2).mean())
            wrong = float(((model(x_t, tt, ys[torch.randperm(len(ys), generator=g)]) - noise) ** 2).mean())
            caption_use[t] = {"right": right, "shuffled": wrong, "ratio": wrong / right}

    x_T, traj = ddim_invert(model, x0, y, args.steps, trajectory=True)
    common = dict(guidance=w, trajectory=traj, null_inner=args.null_inner, null_lr=args.null_lr)
    embs_plain, nulls_plain, _ = dynamic_prompt_learning(model, x_T, y, background, args.steps, inner=0, **common,
                                                         progress=lambda it: tqdm(list(it), desc="null-text inv."))
    recon, store_plain = denoise(model, x_T, y, args.steps, embs_plain, record=True, guidance=w, null_embeddings=nulls_plain)
    t_dpl = time.time()
    embs, nulls, log = dynamic_prompt_learning(model, x_T, y, background, args.steps, inner=args.inner, lr=args.lr,
                                               **common, progress=lambda it: tqdm(list(it), desc="DPL + null-text"))
    t_dpl = time.time() - t_dpl
    recon_dpl, store_dpl = denoise(model, x_T, y, args.steps, embs, record=True, guidance=w, null_embeddings=nulls)
    before = step_leakage(model, store_plain, objects, background, per_step)
    after = step_leakage(model, store_dpl, objects, background, per_step)

    cross = {name: per_step * int(round(args.cross_replace * args.steps)) for name in model.cross_names()}
    selfs = {f"blocks.{i}.attn": per_step * int(round(args.self_replace * args.steps)) for i in range(len(model.blocks))}
    swap = model.tokens.weight[a_new]                                        # (n, D): the new word's embedding

    def swapped(es):
        new = []
        for e in es:
            ph = e[:, list(PLACEHOLDERS)].clone()
            ph[:, 0] = swap
            new.append(splice(e, ph))
        return new

    edit_plain = denoise(model, x_T, y_new, args.steps, swapped(embs_plain), inject=(store_plain, {**cross, **selfs}),
                         guidance=w, null_embeddings=nulls_plain)
    edit_dpl = denoise(model, x_T, y_new, args.steps, swapped(embs), inject=(store_dpl, {**cross, **selfs}),
                       guidance=w, null_embeddings=nulls)
    edit_none = denoise(model, x_T, y_new, args.steps, swapped(embs_plain), guidance=w, null_embeddings=nulls_plain)
    rows = {"NTI + P2P (plain words)": edit_metrics(judge, recon, edit_plain, boxes, objects_px, a_new),
            "DPL + NTI + P2P": edit_metrics(judge, recon_dpl, edit_dpl, boxes, objects_px, a_new),
            "NTI, no map injection": edit_metrics(judge, recon, edit_none, boxes, objects_px, a_new)}
    sweep = {}                                    # shorter map injection: a digit swap changes the shape too
    for pair in args.p2p_sweep:
        cr, sr = (float(v) for v in pair.split(":"))
        inj = {**{nm: per_step * int(round(cr * args.steps)) for nm in model.cross_names()},
               **{f"blocks.{i}.attn": per_step * int(round(sr * args.steps)) for i in range(len(model.blocks))}}
        for label, es, st, nl, rec in (("plain", embs_plain, store_plain, nulls_plain, recon), ("DPL", embs, store_dpl, nulls, recon_dpl)):
            ed = denoise(model, x_T, y_new, args.steps, swapped(es), inject=(st, inj), guidance=w, null_embeddings=nl)
            sweep[f"{label} P2P cross {cr:g} self {sr:g}"] = edit_metrics(judge, rec, ed, boxes, objects_px, a_new)
    recon_err = {"plain": float((recon - x0).abs().mean()), "dpl": float((recon_dpl - x0).abs().mean())}
    recon_acc = {k: float(J.accuracy(judge, crop(r, boxes, 0), a).mean() * 0.5 + J.accuracy(judge, crop(r, boxes, 1), b).mean() * 0.5)
                 for k, r in (("plain", recon), ("dpl", recon_dpl))}

    print(f"\ndenoiser: {train_info}; judge on real boxes {real}; generation from noise: {gen}")
    print(f"noise-prediction MSE, shuffled / right caption at t = 60, 100, 140 (of 200): "
          f"{[round(v['ratio'], 4) for v in caption_use.values()]}")
    print(f"reconstruction mean |x - x0|: {recon_err}; judge accuracy on reconstructed boxes: {recon_acc}")
    print(f"DPL: {t_dpl:.0f} s for {n} scenes x {args.steps} steps; mean updates per step "
          f"{np.mean(log['updates']):.1f} (first {log['updates'][0]:.1f}, last {log['updates'][-1]:.1f})")
    print(f"\n{'leakage (mean over steps)':28s} {'before':>8s} {'after DPL':>10s}")
    for m in before:
        print(f"{m:28s} {before[m]:8.3f} {after[m]:10.3f}")
    print(f"\n{'word swap a -> a_new':28s} " + " ".join(f"{k:>14s}" for k in next(iter(rows.values()))))
    for name, r in {**rows, **sweep}.items():
        print(f"{name:28s} " + " ".join(f"{v:14.3f}" for v in r.values()))
    P, D = rows["NTI + P2P (plain words)"], rows["DPL + NTI + P2P"]
    checks = {
        "leakage outside own box lower after DPL": after["outside"] < before["outside"],
        "obj1/obj2 map overlap lower after DPL": after["overlap"] < before["overlap"],
        "background mass lower after DPL": after["background"] < before["background"],
        "DPL edit changes box 2 less than plain P2P": D["change_box2"] < P["change_box2"],
        "DPL edit keeps object 2 at least as often": D["object2_kept"] >= P["object2_kept"],
        "DPL edit swap success at least plain P2P's": D["swap_success"] >= P["swap_success"],
    }
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  {k}: {v}")

    import matplotlib.pyplot as plt
    show = slice(0, 8)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = torch.cat([x0[show], recon[show], edit_plain[show], recon_dpl[show], edit_dpl[show]])
    axes[0].imshow(1 - tiles(panels, nrow=8), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("rows: real, NTI recon, NTI+P2P swap, DPL+NTI recon, DPL+NTI+P2P swap", fontsize=9)
    axes[0].axis("off")
    k = len(embs) // 2
    mp = [cross_maps(store_plain, model.cross_names(), per_step * k), cross_maps(store_dpl, model.cross_names(), per_step * k)]
    gh, gw = model.grid
    maps_ = [m[:4, :, s].reshape(4, 1, gh, gw) for m in mp for s in PLACEHOLDERS]
    maps_ = [2 * t / t.flatten(1).amax(1)[:, None, None, None] - 1 for t in maps_]
    axes[1].imshow(1 - tiles(torch.cat(maps_), nrow=4), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title(f"maps at step {k}: a, b plain; a, b after DPL (4 scenes)", fontsize=9)
    axes[1].axis("off")
    fig.tight_layout()
    out.save_figure(fig, "edits.png")
    plt.close(fig)
    out.write_json("dpl.json", {"config": vars(args), "train": train_info, "judge_real": real, "generation": gen, "caption_use": caption_use,
                                "reconstruction_error": recon_err, "reconstruction_accuracy": recon_acc,
                                "dpl_seconds": round(t_dpl, 1), "dpl_log": log, "leakage_before": before,
                                "leakage_after": after, "edits": rows, "edits_p2p_sweep": sweep, "checks": checks,
                                "seconds": round(time.time() - t_start, 1)},
                   seeds=[args.seed, 1000 + args.seed])
    print(f"total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
