"""LMEye in miniature: static visual tokens vs request-based interactive perception, on 2x2 digit grids.

Once (seed 0): a digit CNN trained on single ``load_digits`` images and a 2-layer causal LM trained on the
text task with oracle fact tokens, both then frozen. Per seed (scenes, initialisation, order): with 4 visual
tokens each, the static baseline
(``Linear(global feature)``) and LMEye (2 static tokens + request -> queries over the 4 region features in a
1-layer causal interaction transformer -> 2 inserted tokens, second LM pass), both trained through the
Trainer on the same scenes. Reports test accuracy per question type (position, row sum: position-specific;
exists: global) and LMEye with its request vector zeroed.

    .venv/bin/python experiments/lmeye.py [--seeds 3] [--publish]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphattn.results import Results, add_output_args  # noqa: E402
from vision.lmeye.data import QUESTION_TYPES, digit_images, make_scenes  # noqa: E402
from vision.lmeye.model import LMEye, DigitCNN, StaticVisual, TinyCausalLM  # noqa: E402
from vision.lmeye.train import cnn_loss, fit, lm_loss, per_type_accuracy, visual_loss  # noqa: E402

COLUMNS = ["accuracy", *(f"accuracy_{t}" for t in QUESTION_TYPES)]


def pretrain(args):
    """The frozen parts, trained once (seed 0): the digit CNN on single digits and the LM on the text task."""
    images, labels = digit_images()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    pools = dict(zip(("train", "valid", "test"), np.split(order, [int(0.6 * len(order)), int(0.8 * len(order))])))
    torch.manual_seed(0)
    loss, evaluate = cnn_loss(images, labels, pools)
    cnn = fit(DigitCNN(), {"sizes": {k: len(v) for k, v in pools.items()}, "loss": loss, "evaluate": evaluate},
              args.cnn_epochs, 1e-2, 0, batch=64)
    with torch.no_grad():
        cnn_acc = evaluate(cnn.eval(), "test")["accuracy"]
    text = {k: make_scenes(n, labels, pools[k], rng) for k, n in
            {"train": args.text_scenes, "valid": 1000, "test": 1000}.items()}
    loss, evaluate = lm_loss(text)
    lm = fit(TinyCausalLM(), {"sizes": {k: len(v) for k, v in text.items()}, "loss": loss, "evaluate": evaluate},
             args.lm_epochs, 3e-3, 0)
    with torch.no_grad():
        lm_acc = evaluate(lm.eval(), "test")
    print(f"frozen parts: digit CNN test accuracy {cnn_acc:.3f}; text LM with oracle facts: "
          + "  ".join(f"{c.replace('accuracy_', '')} {lm_acc[c]:.3f}" for c in COLUMNS), flush=True)
    return images, labels, pools, cnn, lm, cnn_acc, lm_acc


def run_seed(seed: int, args, frozen) -> dict[str, dict[str, float]]:
    images, labels, pools, cnn, lm, _, _ = frozen
    rng = np.random.default_rng(100 + seed)
    sizes = {"train": args.scenes, "valid": args.scenes // 8, "test": args.scenes // 4}
    scenes = {k: make_scenes(n, labels, pools[k], rng) for k, n in sizes.items()}
    loss, evaluate, feats = visual_loss(scenes, images, cnn)
    task = {"sizes": sizes, "loss": loss, "evaluate": evaluate}
    rows = {}
    for name, build in (("static (Linear(global), 4 tokens)", lambda: StaticVisual(lm, cnn)),
                        ("LMEye (2 static + 2 requested)", lambda: LMEye(lm, cnn))):
        torch.manual_seed(seed)
        model = fit(build(), task, args.epochs, args.lr, seed)
        with torch.no_grad():
            rows[name] = evaluate(model.eval(), "test")
            if isinstance(model, LMEye):
                logits = model.from_features(*feats["test"], scenes["test"].question, zero_request=True)
                rows["LMEye, request zeroed"] = per_type_accuracy(logits, scenes["test"])
    print(f"seed {seed}:")
    for name, r in rows.items():
        print(f"  {name:36s} " + "  ".join(f"{c.replace('accuracy_', '')} {r[c]:.3f}" for c in COLUMNS), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--scenes", type=int, default=8000)
    ap.add_argument("--text-scenes", type=int, default=20000)
    ap.add_argument("--cnn-epochs", type=int, default=15)
    ap.add_argument("--lm-epochs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=3e-3)
    add_output_args(ap, "lmeye")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args("lmeye", args)
    frozen = pretrain(args)
    per_seed = [run_seed(s, args, frozen) for s in range(args.seeds)]
    names = [k for k in per_seed[0] if not k.startswith("_")]
    table = {n: {c: {"mean": float(np.mean([r[n][c] for r in per_seed])),
                     "std": float(np.std([r[n][c] for r in per_seed])),
                     "per_seed": [r[n][c] for r in per_seed]} for c in COLUMNS} for n in names}
    print(f"{'model':36s} " + " ".join(f"{c.replace('accuracy_', ''):>15s}" for c in COLUMNS))
    for n in names:
        print(f"{n:36s} " + " ".join(f"{table[n][c]['mean']:8.3f}+-{table[n][c]['std']:.3f}" for c in COLUMNS))
    st, ey, zr = (table[k] for k in ("static (Linear(global), 4 tokens)", "LMEye (2 static + 2 requested)",
                                     "LMEye, request zeroed"))
    m = lambda t, c: t[f"accuracy_{c}"]["mean"]  # noqa: E731
    checks = {
        "LMEye >> static on position questions (+0.3)": m(ey, "position") > m(st, "position") + 0.3,
        "LMEye >> static on row-sum questions (+0.2)": m(ey, "row_sum") > m(st, "row_sum") + 0.2,
        "LMEye ~ static on the global exists question (within 0.05)": abs(m(ey, "exists") - m(st, "exists")) <= 0.05,
        "zeroing the request degrades LMEye to static on position questions (within 0.1 of static)":
            m(zr, "position") <= m(st, "position") + 0.1,
    }
    for k, v in checks.items():
        print(f"check {'PASS' if v else 'FAIL'}: {k}")
    out.write_json("lmeye.json", {"table": table, "checks": checks,
                                  "frozen_cnn_test_accuracy": frozen[5], "frozen_lm_text_test_accuracy": frozen[6],
                                  "args": vars(args) | {"out": str(args.out)}}, seeds=list(range(args.seeds)))


if __name__ == "__main__":
    main()
