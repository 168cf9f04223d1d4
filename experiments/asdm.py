"""A-SDM on CPU (issue #16): (1) GRI attention layer bench; (2) the tiny-UNet study - teacher, GRI / pruned
CondConv students by distillation, CPU time, sample quality, inherited vs random CondConv experts.

Part ``layer`` (writes asdm.json): GRI (vision/diffusion/asdm.py, a reconstruction: region r x r self-attention
+ attention to one mean-pooled summary per p x p block, one softmax over the union) against the full self-attention it replaces (the same
GraphAttention on the complete token graph, fused SDPA path), and the same union graph run as masked dense
attention (what GRI costs without its windowed path). Forward only, batch 2, interleaved repeats
(bench/timing.py); ratios are published, not absolute times. Also prints max |windowed - masked dense|.

Part ``unet`` (writes asdm_unet.json, asdm_unet_curves.png, asdm_unet_samples.png): trains the UNet teacher on
digits16-diffusion through the Trainer (cached under results/asdm/teacher/: a finished run with the same settings
is reused), distils Student A (GRI), Student B with inherited CondConv experts and Student B with random experts
(vision/diffusion/asdm_unet.py, task diffusion-distill), then (i) times the attention layer and the whole UNet
of teacher and students side by side (interleaved), (ii) samples every model class-conditionally (DDIM, CFG,
the same starting noise for every model) and judges the samples with a digits CNN trained on the 16x16 images
average-pooled to 8x8 (accuracy, confidence, FID on the CNN's 128-d penultimate features against the test
split; real training digits as the reference row), (iv) compares the loss-vs-step curves of the two Student B
initialisations (steps to reach the random-init run's final smoothed loss).

    .venv/bin/python experiments/asdm.py [--parts layer,unet] [--repeats 5] [--publish]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import ratio, timings  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.config import Config, load_yaml  # noqa: E402
from graphattn.results import ROOT  # noqa: E402
from graphattn.training import RunDir, Trainer  # noqa: E402
import vision.diffusion  # noqa: E402,F401  (registers the diffusion tasks, UNet and ASDMStudent)
from vision.diffusion.asdm import GRIAttention, pool_tokens  # noqa: E402
from vision.diffusion.data import load_digits_diffusion  # noqa: E402
from vision.diffusion.distill import load_teacher  # noqa: E402
from vision.diffusion.guidance import GuidedEps  # noqa: E402
from vision.diffusion.images import grid_figure  # noqa: E402
from vision.diffusion.judge import load_or_train_judge  # noqa: E402
from vision.diffusion.schedule import ddim_sample  # noqa: E402

SCRIPT = "asdm"
# (grid side, region r, pool p): 16x16 is the spec's CPU teacher, 64x64 with r = 8, p = 4 the spec's SD v1 example
CASES = [(16, 4, 4), (32, 8, 4), (64, 8, 4)]


def layer_bench(args, out: Results) -> None:
    t_start = time.time()
    rows = []
    print(f"{'grid':>6s} {'r':>3s} {'p':>3s} {'keys/query':>11s} {'full/GRI':>18s} {'masked/GRI':>18s} "
          f"{'full/GRI-sum':>18s} {'max|diff|':>10s}")
    for side, r, pool in CASES:
        torch.manual_seed(args.seed)
        gri = GRIAttention(args.dim, args.heads, (side, side), region=r, pool=pool).eval()
        gri_sum = GRIAttention(args.dim, args.heads, (side, side), region=r, pool=pool, mode="sum").eval()
        gri_sum.attn.load_state_dict(gri.attn.state_dict())
        x = torch.randn(args.batch, side * side, args.dim)
        mask = gri.union_mask()
        with torch.no_grad():
            masked = lambda: gri.attn(x, x_src=torch.cat([x, pool_tokens(x, (side, side), pool)], 1), mask=mask)  # noqa: E731
            diff = float((gri(x) - masked()).abs().max())
            ts = timings({"full": lambda: gri.attn(x), "gri": lambda: gri(x), "gri_sum": lambda: gri_sum(x),
                          "masked": masked}, repeats=args.repeats)
        keys = r * r + (side // pool) ** 2
        row = {"grid": side, "region": r, "pool": pool, "tokens": side * side, "keys_per_query": keys,
               "score_flop_reduction": side * side / keys, "full_over_gri": ratio(ts["full"], ts["gri"]),
               "masked_over_gri": ratio(ts["masked"], ts["gri"]), "full_over_gri_sum": ratio(ts["full"], ts["gri_sum"]),
               "max_abs_diff_windowed_vs_masked": diff}
        rows.append(row)
        fmt = lambda q: f"{q['median']:.2f} [{q['low']:.2f}, {q['high']:.2f}]"   # noqa: E731
        print(f"{side:>4d}^2 {r:>3d} {pool:>3d} {keys:>5d}/{side * side:<5d} {fmt(row['full_over_gri']):>18s} "
              f"{fmt(row['masked_over_gri']):>18s} {fmt(row['full_over_gri_sum']):>18s} {diff:10.2e}")
    checks = {"windowed GRI == masked dense attention on the union graph (max diff < 1e-4)":
              all(r["max_abs_diff_windowed_vs_masked"] < 1e-4 for r in rows),
              "GRI faster than full self-attention at 64x64 tokens": rows[-1]["full_over_gri"]["median"] > 1,
              "GRI gain grows with the token grid": all(a["full_over_gri"]["median"] < b["full_over_gri"]["median"]
                                                       for a, b in zip(rows, rows[1:]))}
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  {k}: {v}")
    out.write_json("asdm.json", {"config": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                 "checks": checks, "seconds": round(time.time() - t_start, 1)}, seeds=[args.seed])


# ----------------------------------------------------------------------------------------- the UNet study

STUDENTS = {"A (GRI)": ("A", "inherit"), "B (GRI + CondConv, inherited)": ("B", "inherit"),
            "B (GRI + CondConv, random)": ("B", "random")}
TEACHER_DIR = ROOT / "results" / "asdm" / "teacher"


def add_unet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher-epochs", type=int, default=50, help="UNet teacher epochs (20 steps of 64 images each)")
    p.add_argument("--distill-epochs", type=int, default=6, help="epochs of each distillation")
    p.add_argument("--per-class", type=int, default=20, help="samples per class and model")
    p.add_argument("--ddim-steps", type=int, default=25)
    p.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--bench-batch", type=int, nargs="+", default=[2, 64], help="batch sizes of the UNet-level timing")
    p.add_argument("--smooth", type=int, default=10, help="moving-average window of the loss-vs-step curves")


def _progress() -> bool:
    return sys.stderr.isatty()


def teacher_run(args) -> Path:
    """A finished UNet run with these settings under results/asdm/teacher/, trained now when there is none."""
    want = {"model": "UNet", "dataset": "digits16-diffusion", "epochs": args.teacher_epochs, "seed": args.seed}
    for folder in sorted(TEACHER_DIR.glob("UNet-digits16-diffusion-*"), reverse=True):
        cfg_file, metrics = folder / "config.yaml", folder / "metrics.json"
        if not (cfg_file.is_file() and (folder / "best.pt").is_file() and metrics.is_file()):
            continue
        cfg = load_yaml(cfg_file)
        if all(cfg.get(k) == v for k, v in want.items()) and json.loads(metrics.read_text()).get("test"):
            print(f"teacher: reusing {folder.relative_to(ROOT)}")
            return folder
    print(f"teacher: training UNet for {args.teacher_epochs} epochs into {TEACHER_DIR.relative_to(ROOT)}")
    config = Config("UNet", "digits16-diffusion", config_dict={
        "epochs": args.teacher_epochs, "seed": args.seed, "num_threads": 1, "checkpoint_dir": str(TEACHER_DIR),
        "show_progress": _progress()})
    with RunDir.create(config) as run:
        Trainer.from_config(config, run).fit()
        return run.path


def distil(args, teacher: Path, student: str, init: str):
    config = Config("ASDMStudent", "digits16-diffusion", config_dict={
        "teacher_run": str(teacher), "student": student, "expert_init": init, "epochs": args.distill_epochs,
        "seed": args.seed, "num_threads": 1, "show_progress": _progress(), "log_level": "WARNING"})
    trainer = Trainer.from_config(config)
    initial = trainer.evaluate("valid")
    test = trainer.fit()
    return trainer, initial, test


def smooth(values: list[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.array([v[max(0, i - window + 1):i + 1].mean() for i in range(len(v))])


def first_step_below(curve: np.ndarray, target: float) -> int | None:
    hits = np.nonzero(curve <= target)[0]
    return int(hits[0]) + 1 if len(hits) else None


def to8(x: torch.Tensor) -> torch.Tensor:
    """The judge's view of a 16x16 image: 2x2 average pooling (undoes the dataset's bilinear upsampling closely)."""
    return F.avg_pool2d(x.clamp(-1, 1), 2)


@torch.no_grad()
def judge_stats(judge, images: torch.Tensor, y: torch.Tensor, ref_feats: np.ndarray) -> dict[str, float]:
    x = to8(images)
    probs = judge(x).softmax(-1)
    feats = judge[:-1](x).numpy().astype(np.float64)                  # (N, 128): penultimate layer (after ReLU)
    return {"accuracy": float((probs.argmax(-1) == y).float().mean()),
            "confidence": float(probs.gather(1, y[:, None]).mean()), "fid": fid(feats, ref_feats)}


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets."""
    from scipy.linalg import sqrtm

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def bench_models(models: dict, batches: list[int], repeats: int, seed: int) -> dict:
    """(i): the self-attention layer and the whole UNet of every model, forward, interleaved repeats."""
    teacher = models["teacher"]
    g = torch.Generator().manual_seed(seed)
    rows = {}
    for b in batches:
        x = torch.randn(b, 1, teacher.image_size, teacher.image_size, generator=g)
        t = torch.randint(0, teacher.schedule.timesteps, (b,), generator=g)
        y = torch.randint(0, teacher.num_classes + 1, (b,), generator=g)
        tokens = torch.randn(b, teacher.image_size ** 2, teacher.channels[0], generator=g)
        with torch.no_grad():
            layer = timings({name: (lambda m=m: m.self_attn.attn(tokens)) for name, m in models.items()
                             if name in ("teacher", "A (GRI)")}, repeats=repeats)
            whole = timings({name: (lambda m=m: m(x, t, y)) for name, m in models.items()}, repeats=repeats)
        rows[b] = {"attention_layer_teacher_over_gri": ratio(layer["teacher"], layer["A (GRI)"]),
                   "unet_teacher_over": {name: ratio(whole["teacher"], whole[name]) for name in models if name != "teacher"}}
    return rows


def unet_study(args, out: Results) -> None:
    t_start = time.time()
    folder = teacher_run(args)
    config = Config("UNet", "digits16-diffusion")
    data = load_digits_diffusion(config)
    teacher, _ = load_teacher({"teacher_run": str(folder), "seed": args.seed,
                               **{k: config[k] for k in ("timesteps", "noise_schedule", "image_size")}}, data)
    teacher_test = json.loads((folder / "metrics.json").read_text())["test"]
    print(f"teacher test noise MSE {teacher_test['mse']:.4f} ({sum(p.numel() for p in teacher.parameters())} params)")

    models, curves, terms, distilled = {"teacher": teacher}, {}, {}, {}
    for name, (student, init) in STUDENTS.items():
        t0 = time.time()
        trainer, initial, test = distil(args, folder, student, init)
        model = trainer.model.eval()
        models[name] = model
        curves[name] = trainer.task.step_losses
        terms[name] = trainer.task.step_terms
        distilled[name] = {"student": student, "expert_init": init, "valid_before": initial, "test": test,
                           "params": sum(p.numel() for p in model.parameters()), "pruned_blocks": model.pruned,
                           "steps": len(trainer.task.step_losses), "seconds": round(time.time() - t0, 1)}
        print(f"{name:32s} valid mse before {initial['mse']:.4f} -> test mse {test['mse']:.4f}, teacher mse "
              f"{test['teacher_mse']:.4f} ({distilled[name]['params']} params, {distilled[name]['seconds']:.0f} s)")

    # (iv) inherited vs random experts: the total loss and its output-distillation term
    inh, rnd = "B (GRI + CondConv, inherited)", "B (GRI + CondConv, random)"
    series = {"total": curves, "teacher_mse": {n: [p["teacher_mse"] for p in terms[n]] for n in terms}}
    conv = {"smooth_window": args.smooth}
    print()
    for kind, cs in series.items():
        sm = {name: smooth(c, args.smooth) for name, c in cs.items()}
        target = float(sm[rnd][-1])
        steps_to = {name: first_step_below(sm[name], target) for name in (inh, rnd)}
        conv[kind] = {"target": target, "steps_to_target": steps_to, "first_step": {n: cs[n][0] for n in cs},
                      "final_smoothed": {n: float(sm[n][-1]) for n in sm}}
        print(f"(iv) {kind} loss: target = random-init final smoothed value {target:.4f}; steps to reach it: inherited "
              f"{steps_to[inh]}, random {steps_to[rnd]}; first step: inherited {cs[inh][0]:.4f}, random {cs[rnd][0]:.4f}")
    conv["valid_before_training"] = {n: distilled[n]["valid_before"] for n in (inh, rnd)}

    # (ii) sample quality
    train_x, train_y = data["train"]
    judge = load_or_train_judge(TEACHER_DIR.parent / "judge_cnn_avgpool8.pt", "cnn", to8(train_x), train_y, seed=args.seed)
    test_x, test_y = data["test"]
    with torch.no_grad():
        ref = judge[:-1](to8(test_x)).numpy().astype(np.float64)
    n = args.per_class * teacher.num_classes
    y = torch.arange(teacher.num_classes).repeat_interleave(args.per_class)
    g = torch.Generator().manual_seed(args.seed + 1)
    x_T = torch.randn(n, 1, teacher.image_size, teacher.image_size, generator=g)
    real_idx = torch.cat([torch.nonzero(train_y == c).flatten()[:args.per_class] for c in range(teacher.num_classes)])
    quality = {"real train digits (reference)": judge_stats(judge, train_x[real_idx], train_y[real_idx], ref)}
    samples = {}
    for name, model in models.items():
        x0 = ddim_sample(GuidedEps(model, y, cfg_scale=args.cfg), model.schedule, tuple(x_T.shape), args.ddim_steps,
                         x_T=x_T)
        samples[name] = x0
        quality[name] = judge_stats(judge, x0, y, ref)
    print(f"\n(ii) {n} samples per model (DDIM {args.ddim_steps} steps, CFG {args.cfg}); judge: CNN on 8x8 "
          f"(test accuracy {judge_stats(judge, test_x, test_y, ref)['accuracy']:.3f}); FID vs the {len(test_y)} test digits")
    print(f"{'':34s} {'accuracy':>9s} {'confidence':>11s} {'FID':>8s}")
    for name, q in quality.items():
        print(f"{name:34s} {q['accuracy']:9.3f} {q['confidence']:11.3f} {q['fid']:8.2f}")

    # (i) CPU time, side by side
    bench = bench_models(models, args.bench_batch, args.repeats, args.seed)
    fmt = lambda q: f"{q['median']:.2f} [{q['low']:.2f}, {q['high']:.2f}]"   # noqa: E731
    print(f"\n(i) forward CPU time, teacher / model (median [extreme pairings], {args.repeats} interleaved repeats)")
    for b, row in bench.items():
        print(f"  batch {b:3d}: self-attention layer teacher/GRI {fmt(row['attention_layer_teacher_over_gri'])}; whole UNet "
              + "; ".join(f"teacher/{k.split(' (')[0] + (' inh' if 'inherited' in k else ' rnd' if 'random' in k else '')}"
                          f" {fmt(v)}" for k, v in row["unet_teacher_over"].items()))

    checks = {
        "(i) GRI attention layer faster than the teacher's full self-attention (largest batch)":
            bench[max(bench)]["attention_layer_teacher_over_gri"]["median"] > 1,
        "(i) whole-UNet gain of student B > 1 and smaller than its attention-layer gain (largest batch)":
            1 < bench[max(bench)]["unet_teacher_over"][inh]["median"] < bench[max(bench)]["attention_layer_teacher_over_gri"]["median"],
        "(ii) every student's sample accuracy within 0.05 of the teacher's":
            all(quality[k]["accuracy"] >= quality["teacher"]["accuracy"] - 0.05 for k in STUDENTS),
        "(ii) every student's FID at most 1.5 x the teacher's":
            all(quality[k]["fid"] <= 1.5 * quality["teacher"]["fid"] for k in STUDENTS),
        **{f"(iv) inherited experts reach the random-init final {kind} loss in fewer steps":
           conv[kind]["steps_to_target"][inh] is not None
           and conv[kind]["steps_to_target"][inh] < conv[kind]["steps_to_target"][rnd] for kind in series},
        **{f"(iv) inherited experts start at a lower {kind} loss": series[kind][inh][0] < series[kind][rnd][0]
           for kind in series},
    }
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  {k}: {'pass' if v else 'FAIL'}")
    out.write_json("asdm_unet.json", {
        "config": {k: (v if isinstance(v, (int, float, list)) else str(v)) for k, v in vars(args).items()},
        "teacher_run": str(folder.relative_to(ROOT)), "teacher_test": teacher_test, "distilled": distilled,
        "convergence": conv, "curves": curves, "step_terms": terms, "quality": quality, "bench": {str(k): v for k, v in bench.items()},
        "checks": checks, "seconds": round(time.time() - t_start, 1)}, seeds=[args.seed])
    plot_curves(series, conv, args.smooth, out)
    out.save_figure(grid_figure({name: samples[name] for name in models}, nrow=args.per_class), "asdm_unet_samples.png")


def plot_curves(series, conv, window: int, out: Results) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(series), figsize=(5.6 * len(series), 4.0), squeeze=False)
    labels = {"total": "distillation loss (noise + teacher + feature MSE)", "teacher_mse": "MSE to the teacher's eps"}
    for ax, (kind, cs) in zip(axes[0], series.items()):
        for name, c in cs.items():
            line, = ax.plot(range(1, len(c) + 1), c, alpha=0.25)
            ax.plot(range(1, len(c) + 1), smooth(c, window), color=line.get_color(), label=name)
        ax.axhline(conv[kind]["target"], color="grey", ls="--", lw=0.8, label="target: random-init final (smoothed)")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(labels.get(kind, kind))
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.save_figure(fig, "asdm_unet_curves.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="layer,unet", help="comma list of: layer (GRI layer bench), unet (UNet study)")
    p.add_argument("--dim", type=int, default=64, help="layer bench: token width")
    p.add_argument("--heads", type=int, default=4, help="layer bench: heads")
    p.add_argument("--batch", type=int, default=2, help="layer bench: batch")
    p.add_argument("--repeats", type=int, default=9, help="interleaved timing repeats (both benches)")
    p.add_argument("--seed", type=int, default=0)
    add_unet_args(p)
    add_output_args(p, SCRIPT)
    args = p.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"layer", "unet"}:
        raise SystemExit(f"--parts: unknown {sorted(parts - {'layer', 'unet'})}; expected layer and/or unet")
    torch.set_num_threads(1)
    out = Results.from_args(SCRIPT, args)
    if "layer" in parts:
        layer_bench(args, out)
    if "unet" in parts:
        unet_study(args, out)


if __name__ == "__main__":
    main()
