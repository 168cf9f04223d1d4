"""Why did the DPL scene denoiser ignore its caption? Short trainings of variants, measured side by side (issue #16).

Variants of :class:`vision.diffusion.dpl.SceneDenoiser`, each trained through the Trainer for the same budget
(``--epochs`` over ``--train-scenes`` scenes) on the same scenes:

* ``legacy``: the first design (caption slot positions N(0, 0.02^2) next to N(0, 1) token rows, no final
  text norm, learned image positions only); reproduces the published run that failed.
* ``caption-fix``: the caption-side fixes on the legacy backbone (slot positions at the token rows' scale, a final LayerNorm on the
  text encoder's output, fixed 2-D sine-cosine image positions added to the learned ones).
* ``oracle``: the legacy backbone conditioned the way the DiT is (``c = emb(t) + E_left(a) + E_right(b)``,
  two class tables added to the step embedding); the cross-attention sees only the null caption. If the
  oracle follows its labels and the caption model does not, the fault is the caption path.
* ``adaln``: caption-fix with adaLN-Zero blocks (the published design); ``adaln-pooled`` also adds the encoded
  nouns to the step embedding; ``oracle-adaln``: the oracle's class tables through the adaLN-Zero blocks.

``--positions fixed`` centres the digits (the spec's simpler scene); ``--snr-gamma 5`` trains with Min-SNR-5
loss weighting (:class:`vision.diffusion.dpl.SceneTask`). Trained models are cached under ``results/dpl/``
(shared with ``experiments/dpl.py``).

Measured per variant: gradient norms reaching the caption (token table, slot positions, cross-attention
projections) on the first batch; samples from noise with the test captions, judged per box by the CNN judge
(windows located by ink, :func:`locate_boxes`), at guidance 1 and ``--guidance``; the noise-prediction MSE
with the null / shuffled caption over the right one; the cross-attention output norm beside the block's
self-attention and MLP outputs; the mean cross-attention mass per caption token (sinks?) and, split by the
image half, on the a and b slots (does the left half read a?).

    .venv/bin/python experiments/dpl_diagnose.py [--variants legacy caption-fix oracle] [--positions random]
        [--epochs 12] [--snr-gamma 5] [--tag NAME] [--publish]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vision.diffusion  # noqa: E402,F401
from graphattn.interpret import cache_activations, capture_attention  # noqa: E402
from graphattn.results import Results, add_output_args  # noqa: E402
from vision.diffusion import judge as J  # noqa: E402
from vision.diffusion.dit import timestep_embedding  # noqa: E402
from vision.diffusion.dpl import SceneDenoiser, caption_tokens, crop, locate_boxes, scene_data  # noqa: E402

_spec = importlib.util.spec_from_file_location("dpl_experiment", Path(__file__).with_name("dpl.py"))
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)

VARIANTS = ("legacy", "caption-fix", "oracle", "adaln", "adaln-pooled", "oracle-adaln")


def make_legacy(model: SceneDenoiser) -> SceneDenoiser:
    """The first design: tiny slot positions, no final text norm, no fixed image positions."""
    with torch.no_grad():
        model.slot.mul_(0.02)
    model.text_out = nn.Identity()
    model.pos_fixed.zero_()
    return model


class OracleDenoiser(SceneDenoiser):
    """The legacy backbone with DiT-style class conditioning: ``c = emb(t) + E_left(a) + E_right(b)``
    (row 10 = null); the caption fed to the cross-attention is always the null caption."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.left = nn.Embedding(11, self.dim)
        self.right = nn.Embedding(11, self.dim)

    def forward(self, x_t, t, y, emb=None):
        if emb is not None:
            raise ValueError("the oracle takes labels, not caption embeddings")
        tok = caption_tokens(y)
        a, b = tok[:, 1].clamp(max=10), tok[:, 3].clamp(max=10)            # NULL (14) -> row 10
        self._label = self.left(a) + self.right(b)
        return super().forward(x_t, t, torch.full_like(y, 100))

    def t_cond(self, t):
        return self.t_mlp(timestep_embedding(t, self.dim)) + self._label


def build(variant: str, config, scenes) -> SceneDenoiser:
    torch.manual_seed(int(config["seed"]))
    if variant == "legacy":
        return make_legacy(SceneDenoiser(config, scenes, conditioning="additive"))
    if variant == "caption-fix":
        return SceneDenoiser(config, scenes, conditioning="additive")
    if variant == "oracle":
        return make_legacy(OracleDenoiser(config, scenes, conditioning="additive"))
    if variant in ("adaln", "adaln-pooled"):
        return SceneDenoiser(config, scenes, conditioning=variant)
    if variant == "oracle-adaln":
        return OracleDenoiser(config, scenes)
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def grad_norms(model, scenes, n: int = 64) -> dict[str, float]:
    """Gradient norms of the DDPM loss on one batch (t at mid noise) at initialisation."""
    x, y = (v[:n] for v in scenes["train"])
    g = torch.Generator().manual_seed(0)
    batch = {"x": x, "y": y, "t": torch.randint(40, 160, (n,), generator=g), "noise": torch.randn(x.shape, generator=g),
             "drop": torch.zeros(n, dtype=torch.bool)}
    with torch.no_grad():
        model.out.weight.normal_(std=0.02)   # zero-initialised output would block every gradient below it
    model.zero_grad()
    model.loss(batch).backward()
    named = dict(model.named_parameters())
    pick = {"tokens": ["tokens.weight"], "slot": ["slot"], "cross (all blocks)": [k for k in named if ".cross." in k],
            "self-attn (all blocks)": [k for k in named if ".attn." in k],
            "oracle class tables": [k for k in named if k.split(".")[0] in ("left", "right")]}
    out = {k: float(torch.sqrt(sum((named[n].grad ** 2).sum() for n in v if named[n].grad is not None)))
           for k, v in pick.items() if v}
    model.zero_grad()
    return out


@torch.no_grad()
def sample(model, x: torch.Tensor, y: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:
    """DDIM from ``x`` with labels ``y`` and classifier-free guidance (null label 100), x0 clipped: the same
    sampler as :func:`denoise`, through ``forward(x, t, y)`` so that the oracle runs too."""
    seq = model.schedule.timesteps_for(steps)
    null = torch.full_like(y, 100)
    for t, t_prev in zip(seq, seq[1:] + [-1]):
        tt = torch.full((len(y),), t, dtype=torch.long)
        eps = model(x, tt, y)
        if guidance != 1.0:
            eps_u = model(x, tt, null)
            eps = eps_u + guidance * (eps - eps_u)
        x = model.schedule.ddim_step(x, tt, torch.full_like(tt, t_prev), eps, clip=1.0)
    return x


@torch.no_grad()
def measure(model, scenes, judge, positions: str, guidance: float, n: int, steps: int, seed: int) -> dict:
    model.eval()
    g = torch.Generator().manual_seed(seed)
    xs, ys = (v[:n] for v in scenes["test"])
    a, b = ys // 10, ys % 10
    res = {"generation": {}}
    for w in (1.0, guidance):
        x = sample(model, torch.randn(xs.shape, generator=g), ys, steps, w)
        boxes = locate_boxes(x, positions)
        res["generation"][f"w={w:g}"] = {"box1": float(J.accuracy(judge, crop(x, boxes, 0), a).mean()),
                                         "box2": float(J.accuracy(judge, crop(x, boxes, 1), b).mean())}
    res["mse"] = {}
    names = [f"blocks.{i}.{m}" for i in range(len(model.blocks)) for m in ("attn", "cross", "mlp")]
    gh, gw = model.grid
    left = (torch.arange(gh * gw) % gw) < gw // 2
    for t in (20, 60, 100):
        tt = torch.full((len(ys),), t)
        noise = torch.randn(xs.shape, generator=g)
        x_t = model.schedule.q_sample(xs, tt, noise)
        err = lambda yy: float(((model(x_t, tt, yy) - noise) ** 2).mean())   # noqa: E731
        right = err(ys)
        res["mse"][t] = {"right": right, "null/right": err(torch.full_like(ys, 100)) / right,
                         "shuffled/right": err(ys[torch.randperm(len(ys), generator=g)]) / right}
        if t == 60:
            with capture_attention(model) as store, cache_activations(model, names) as acts:
                model(x_t, tt, ys)
            res["output_norms_t60"] = {k: round(float(v[0].norm(dim=-1).mean()), 3) for k, v in acts.items()}
            res["token_mass_t60 [sot,a,left,b,right,eot]"] = {
                k: [round(float(v), 3) for v in store[k][0].mean((0, 1, 2))] for k in model.cross_names()}
            res["halves_t60 (left: a, b; right: a, b)"] = {
                k: [round(float(store[k][0].mean(1)[:, half][..., s].mean()), 3) for half in (left, ~left) for s in (1, 3)]
                for k in model.cross_names()}
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--positions", default="random", choices=("random", "fixed"))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--train-scenes", type=int, default=4000)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--snr-gamma", type=float, default=None, help="Min-SNR-gamma loss weighting (default: plain MSE)")
    p.add_argument("--samples", type=int, default=128, help="test captions sampled from noise")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="suffix of the JSON name")
    add_output_args(p, "dpl")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Results.from_args("dpl", args)
    config = exp.make_config(args.epochs, args.lr, args.seed)
    digits = exp.DiffusionTask(config).data
    scenes = scene_data(digits, {"train": args.train_scenes, "valid": 256, "test": 256}, args.seed, args.positions)
    judge = J.load_or_train_judge(out.dir / "judge_cnn.pt", "cnn", *digits["train"], seed=0)
    rows = {}
    for variant in tqdm(args.variants, desc="variants"):
        model = build(variant, config, scenes)
        grads = grad_norms(build(variant, config, scenes), scenes)
        prefix, key = exp.denoiser_cache(out.dir, variant, args.positions, args.epochs, args.lr, args.train_scenes,
                                         args.seed, args.snr_gamma)
        model, info = exp.train_or_load(config, scenes, model, prefix, key, args.snr_gamma)
        norms = {"token_rows_mean": float(model.tokens.weight.norm(dim=1).mean()),
                 "slot_rows": [round(float(v), 3) for v in model.slot.norm(dim=1)]}
        rows[variant] = {"train": info, "grad_norms_init": grads, "embedding_norms_trained": norms,
                         **measure(model, scenes, judge, args.positions, args.guidance, args.samples, args.steps, 1000 + args.seed)}
        r = rows[variant]
        print(f"\n== {variant} ({args.positions} positions, {args.epochs} epochs): train {info}")
        print(f"  grad norms at init: { {k: round(v, 4) for k, v in grads.items()} }; trained embedding norms {norms}")
        print(f"  generation (judge acc per box): {r['generation']}")
        print(f"  mse: { {t: {k: round(v, 4) for k, v in m.items()} for t, m in r['mse'].items()} }")
        for k in ("output_norms_t60", "token_mass_t60 [sot,a,left,b,right,eot]", "halves_t60 (left: a, b; right: a, b)"):
            print(f"  {k}: {r[k]}")
    name = f"diagnosis_{args.positions}{'_' + args.tag if args.tag else ''}.json"
    out.write_json(name, {"config": vars(args), "variants": rows}, seeds=[args.seed, 1000 + args.seed])


if __name__ == "__main__":
    main()
