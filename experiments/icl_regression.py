"""In-context linear regression with multi-head softmax attention (He et al. 2025, arXiv 2503.12734).

Trains ``ICLRegression`` (one layer, H full-width heads, d = 5, L = 40, sigma^2 = 0.1, Adam 1e-3, batch 256)
through the Trainer for H in {1, 2, 4, 8}, logging every head's omega_h / mu_h every ``steps_per_epoch``
steps, then checks the paper's mechanistic claims:

1. KQ pattern: per head the x-block of Q^T K is ~ omega_h I (off-diagonal and y-row/column small);
2. OV pattern: O V has only its last entry mu_h; for H = 2, mu_1 + mu_2 ~ 0 with opposite signs;
3. the reduced predictor built from the fitted (omega_h, mu_h) matches the network; GD / debiased GD beside it;
   head surgery (weights replaced by the idealised pattern) and head ablation through graphattn.interpret;
4. test MSE vs context length 10..100: multi-head below single-head at every length, still falling past 40;
5. gradient flow on the paper's surrogate loss from a small random (omega, mu) gives the opposite-sign pair.

    .venv/bin/python experiments/icl_regression.py [--steps 20000] [--seed 1029] [--publish]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sequence  # noqa: E402,F401  (registers task icl)
from graphattn.config import Config  # noqa: E402
from graphattn.interpret import ablate_heads  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from graphattn.training import Trainer  # noqa: E402
from sequence.icl.estimators import (debiased_gd_predictor, gd_predictor, reduced_predictor,  # noqa: E402
                                     ridge_predictor, surrogate_gradient_flow)
from sequence.icl.regression_data import RegressionData, sample_regression  # noqa: E402

D, L_TRAIN, NOISE = 5, 40, 0.1


def train(heads: int, steps: int, per_epoch: int, seed: int, tmp: str):
    cfg = Config("ICLRegression", "icl-regression", config_dict={
        "icl_heads": heads, "epochs": max(1, steps // per_epoch), "steps_per_epoch": per_epoch, "seed": seed,
        "num_threads": 1, "device": "cpu", "checkpoint_dir": tmp, "log_level": "WARNING",
        "icl_valid_size": 2048, "icl_test_size": 10000})
    trainer = Trainer.from_config(cfg)
    trainer.train()
    # the last weights, not the best-validation ones: the mechanism is read off the end of training
    return trainer


def mse(pred: torch.Tensor, batch) -> float:
    return float((pred - batch["target"]).pow(2).mean()) + NOISE


def structure(model) -> dict:
    """How close each head is to (omega I on x, 0 elsewhere) and (0, ..., 0, mu)."""
    kq, ov = model.kq_matrices().detach(), model.ov_matrices().detach()
    omega, mu = model.omega_mu()
    rows = []
    for h in range(model.heads):
        xx = kq[h, :D, :D]
        diag = torch.diagonal(xx)
        off = xx - torch.diag(diag)
        rows.append({
            "head": h, "omega": float(omega[h]), "mu": float(mu[h]),
            "kq_diag_mean": float(diag.mean()), "kq_diag_cv": float(diag.std() / diag.abs().mean().clamp_min(1e-12)),
            "kq_offdiag_max_over_diag": float(off.abs().max() / diag.abs().mean().clamp_min(1e-12)),
            "kq_y_rowcol_max_over_diag": float(torch.cat([kq[h, D, :D], kq[h, :D, D]]).abs().max()
                                               / diag.abs().mean().clamp_min(1e-12)),
            "ov": ov[h].tolist(),
            "ov_x_max_over_last": float(ov[h, :D].abs().max() / ov[h, D].abs().clamp_min(1e-12)),
            "kq": kq[h].tolist()})
    return {"heads": rows, "mu_sum": float(mu.sum()), "mu_abs_sum": float(mu.abs().sum())}


def surgery(model, omega, mu):
    """Replace every head's weights by the idealised pattern with the fitted (omega_h, mu_h)."""
    w = D + 1
    scale = model.attn.score.scale
    with torch.no_grad():
        q = torch.zeros(model.heads, w, w)
        k = torch.zeros(model.heads, w, w)
        v = torch.zeros(model.heads, w, w)
        o = torch.zeros(model.heads, w)
        for h in range(model.heads):
            q[h, :D, :D] = torch.eye(D) * math.sqrt(abs(float(omega[h])) / scale)
            k[h, :D, :D] = torch.eye(D) * math.sqrt(abs(float(omega[h])) / scale) * (1.0 if omega[h] >= 0 else -1.0)
            v[h, D, D] = 1.0
            o[h, D] = float(mu[h])
        model.attn.score.q.weight.copy_(q.reshape(-1, w))
        model.attn.score.k.weight.copy_(k.reshape(-1, w))
        model.attn.message.v.weight.copy_(v.reshape(-1, w))
        model.attn.update.proj.weight.copy_(o.reshape(1, -1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000, help="Adam steps per model (paper: 500k)")
    parser.add_argument("--steps-per-epoch", type=int, default=1000, help="logging interval (paper: 1000)")
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seed", type=int, default=1029, help="the notebook's seed")
    parser.add_argument("--eval-size", type=int, default=10000, help="fresh prompts per evaluation")
    parser.add_argument("--flow-steps", type=int, default=30000)
    add_output_args(parser, "icl_regression")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args("icl_regression", args)

    gen = torch.Generator().manual_seed(args.seed + 7)
    lengths = list(range(10, 101, 10))
    evals = {n: sample_regression(args.eval_size, n, D, NOISE, gen) for n in lengths}
    base = evals[L_TRAIN]

    models, payload = {}, {"settings": {"d": D, "L": L_TRAIN, "sigma2": NOISE, "steps": args.steps,
                                        "batch": 256, "optimizer": "adam 1e-3", "eval_size": args.eval_size},
                           "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for heads in args.heads:
            print(f"--- training H = {heads} for {args.steps} steps")
            trainer = train(heads, args.steps, args.steps_per_epoch, args.seed, tmp)
            model = trainer.model.eval()
            models[heads] = model
            hist = [r for r in trainer.history["evaluations"] if r["split"] == "valid"]
            dyn = {"step": [r["epoch"] * args.steps_per_epoch for r in hist], "valid_mse": [r["mse"] for r in hist],
                   "omega": [[r[f"omega_{h}"] for h in range(heads)] for r in hist],
                   "mu": [[r[f"mu_{h}"] for h in range(heads)] for r in hist]}
            payload["models"][str(heads)] = {"dynamics": dyn, "structure": structure(model)}

    rows, checks = [], {}
    with torch.no_grad():
        for heads, model in models.items():
            omega, mu = model.omega_mu()
            net = model(base["context"], base["query"])
            red = reduced_predictor(base["context"], base["query"], omega, mu)
            coef = float((omega * mu).sum())
            row = {"H": heads, "net_mse": mse(net, base), "reduced_mse": mse(red, base),
                   "reduced_vs_net_rel": float((red - net).pow(2).mean() / net.var()),
                   "gd_mse": mse(gd_predictor(base["context"], base["query"], coef), base),
                   "debiased_gd_mse": mse(debiased_gd_predictor(base["context"], base["query"], coef), base),
                   "coef_sum_omega_mu": coef, "mu_sum": float(mu.sum())}
            # head ablation through graphattn.interpret: the MSE when each head sends nothing
            row["ablate_head_mse"] = []
            for h in range(heads):
                with ablate_heads(model.attn, [h]):
                    row["ablate_head_mse"].append(mse(model(base["context"], base["query"]), base))
            surgical = type(model)(Config("ICLRegression", "icl-regression", config_dict={"icl_heads": heads}),
                                   RegressionData(D, L_TRAIN, NOISE))
            surgery(surgical, omega, mu)
            row["surgery_mse"] = mse(surgical(base["context"], base["query"]), base)
            row["mse_vs_length"] = {n: mse(model(evals[n]["context"], evals[n]["query"]), evals[n]) for n in lengths}
            rows.append(row)
        ref_coef = next((r["coef_sum_omega_mu"] for r in rows if r["H"] == 2), rows[-1]["coef_sum_omega_mu"])
        baselines = {
            "gd (coef from H=2)": {n: mse(gd_predictor(evals[n]["context"], evals[n]["query"], ref_coef), evals[n]) for n in lengths},
            "debiased gd (coef from H=2)": {n: mse(debiased_gd_predictor(evals[n]["context"], evals[n]["query"], ref_coef), evals[n]) for n in lengths},
            "ridge lambda=sigma^2 d": {n: mse(ridge_predictor(evals[n]["context"], evals[n]["query"], NOISE * D), evals[n]) for n in lengths},
            "paper 2-head estimator (omega=0.13, mu=3.45)": {n: mse(reduced_predictor(evals[n]["context"], evals[n]["query"], torch.tensor([0.13, -0.13]), torch.tensor([3.45, -3.45])), evals[n]) for n in lengths},
        }
        kmu = math.sqrt(D) / (1 + (1 + NOISE) * D * math.e / L_TRAIN)
        baselines["single-head kernel estimator (omega=1/sqrt(d))"] = {
            n: mse(reduced_predictor(evals[n]["context"], evals[n]["query"], torch.tensor([1 / math.sqrt(D)]), torch.tensor([kmu])), evals[n])
            for n in lengths}
    payload["rows"], payload["baselines"] = rows, baselines

    # surrogate-loss gradient flow (spec item 5), H = 2 from a small random start
    g = torch.Generator().manual_seed(args.seed)
    w0, m0 = 0.01 * torch.randn(2, generator=g), 0.01 * torch.randn(2, generator=g)
    flow = surrogate_gradient_flow(w0, m0, D, L_TRAIN, NOISE, lr=0.01, steps=args.flow_steps, record_every=100)
    payload["surrogate_flow"] = {"start": {"omega": w0.tolist(), "mu": m0.tolist()},
                                 "end": {"omega": flow["omega"][-1].tolist(), "mu": flow["mu"][-1].tolist(),
                                         "loss": float(flow["loss"][-1])}}

    # ------------------------------------------------------------------ checks and the printed table
    print("\nH  net MSE  reduced  |red-net|^2/var  GD     debiased GD  surgery  sum mu   ablate each head")
    for r in rows:
        print(f"{r['H']:<2} {r['net_mse']:.4f}   {r['reduced_mse']:.4f}   {r['reduced_vs_net_rel']:.4f}          "
              f"{r['gd_mse']:.4f} {r['debiased_gd_mse']:.4f}       {r['surgery_mse']:.4f}   {r['mu_sum']:+.3f}  "
              + " ".join(f"{v:.3f}" for v in r["ablate_head_mse"]))
    print("\ntest MSE (+ sigma^2) vs context length (trained at 40)")
    print("L     " + " ".join(f"{n:>6}" for n in lengths))
    for r in rows:
        print(f"H={r['H']:<3} " + " ".join(f"{r['mse_vs_length'][n]:6.3f}" for n in lengths))
    for name, vals in baselines.items():
        print(f"{name}\n      " + " ".join(f"{vals[n]:6.3f}" for n in lengths))
    for h in payload["models"]:
        for head in payload["models"][h]["structure"]["heads"]:
            print(f"H={h} head {head['head']}: omega={head['omega']:+.4f} mu={head['mu']:+.4f} "
                  f"KQ offdiag/diag={head['kq_offdiag_max_over_diag']:.3f} y-row/col/diag={head['kq_y_rowcol_max_over_diag']:.3f} "
                  f"diag cv={head['kq_diag_cv']:.3f} OV x/last={head['ov_x_max_over_last']:.3f}")
    print(f"surrogate flow: omega {flow['omega'][-1].tolist()} mu {flow['mu'][-1].tolist()}")

    by_h = {r["H"]: r for r in rows}
    if 2 in by_h:
        s2 = payload["models"]["2"]["structure"]
        om = [h["omega"] for h in s2["heads"]]
        mus = [h["mu"] for h in s2["heads"]]
        checks["H=2 opposite-sign omegas"] = om[0] * om[1] < 0
        checks["H=2 opposite-sign mus, |mu1+mu2| < 0.1 (|mu1|+|mu2|)"] = (mus[0] * mus[1] < 0
                                                                           and abs(sum(mus)) < 0.1 * sum(map(abs, mus)))
        checks["H=2 KQ off-diagonal < 0.2 x diagonal (both heads)"] = all(h["kq_offdiag_max_over_diag"] < 0.2 for h in s2["heads"])
        checks["H=2 OV x-entries < 0.2 x last entry (both heads)"] = all(h["ov_x_max_over_last"] < 0.2 for h in s2["heads"])
    checks["reduced predictor matches the network (rel. sq. diff < 0.05, every H)"] = all(r["reduced_vs_net_rel"] < 0.05 for r in rows)
    if 1 in by_h:
        multi = [r for r in rows if r["H"] > 1]
        checks["multi-head MSE < single-head MSE at every length"] = all(
            r["mse_vs_length"][n] < by_h[1]["mse_vs_length"][n] for r in multi for n in lengths)
    checks["MSE still falls beyond L=40 (every H: MSE(100) < MSE(40))"] = all(
        r["mse_vs_length"][100] < r["mse_vs_length"][40] for r in rows)
    end_w, end_m = flow["omega"][-1], flow["mu"][-1]
    checks["surrogate flow gives an opposite-sign pair"] = bool(end_w[0] * end_w[1] < 0 and end_m[0] * end_m[1] < 0)
    payload["checks"] = checks
    print("\nchecks:")
    for k, v in checks.items():
        print(f"  [{'pass' if v else 'FAIL'}] {k}")
    out.write_json("icl_regression.json", payload, seeds=[args.seed])
    plot(out, payload, lengths, baselines, flow)


def plot(out, payload, lengths, baselines, flow) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for key, ls in (("2", "-"), ("4", ":")):
        if key not in payload["models"]:
            continue
        dyn = payload["models"][key]["dynamics"]
        om, mu = np.array(dyn["omega"]), np.array(dyn["mu"])
        for h in range(om.shape[1]):
            axes[0].plot(dyn["step"], om[:, h], ls, label=f"H={key} omega_{h}")
            axes[1].plot(dyn["step"], mu[:, h], ls, label=f"H={key} mu_{h}")
        if key == "2":
            axes[1].plot(dyn["step"], mu.sum(1), "k--", label="H=2 mu_0 + mu_1")
    axes[0].set_title("KQ dynamics: omega_h (scale x mean x-diagonal of Q^T K)")
    axes[1].set_title("OV dynamics: mu_h (last entry of O V)")
    for ax in axes[:2]:
        ax.set_xlabel("step")
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=7)
    for r in payload["rows"]:
        axes[2].plot(lengths, [r["mse_vs_length"][n] for n in lengths], "o-", label=f"trained H={r['H']}")
    for name, vals in baselines.items():
        if "ridge" in name or "debiased" in name:
            axes[2].plot(lengths, [vals[n] for n in lengths], "--", label=name)
    axes[2].axvline(L_TRAIN, color="grey", lw=0.5)
    axes[2].set_xlabel("context length at test")
    axes[2].set_ylabel("MSE (+ sigma^2)")
    axes[2].set_title("test MSE vs context length (trained at 40)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    out.save_figure(fig, "icl_regression.png")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    if "2" in payload["models"]:
        for h, head in enumerate(payload["models"]["2"]["structure"]["heads"]):
            kq = np.array(head["kq"])
            lim = np.abs(kq).max()
            im = axes[h].imshow(kq, cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[h].set_title(f"H=2 head {h}: Q^T K (omega={head['omega']:+.3f})")
            fig.colorbar(im, ax=axes[h])
    axes[2].plot(flow["step"].numpy(), flow["omega"].numpy(), label=["omega_0", "omega_1"])
    axes[2].plot(flow["step"].numpy(), flow["mu"].numpy(), "--", label=["mu_0", "mu_1"])
    axes[2].set_title("gradient flow on the surrogate loss (H=2)")
    axes[2].set_xlabel("Euler step (lr 0.01)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    out.save_figure(fig, "icl_regression_heads.png")


if __name__ == "__main__":
    main()
