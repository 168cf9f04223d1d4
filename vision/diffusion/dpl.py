"""Dynamic Prompt Learning in miniature: cross-attention leakage on two-digit scenes and DPL's fix.

Wang et al., "Dynamic Prompt Learning: Addressing Cross-Attention Leakage for Text-Based Image Editing"
(NeurIPS 2023, https://arxiv.org/abs/2309.15664). A caption's noun tokens are replaced by placeholders whose
input embeddings are optimised *per denoising step* against losses on the cross-attention maps
``M (P pixels x L tokens)`` (mean over heads and cross-attention layers), nouns ``n in I``:

    attention balancing  L_att = max_n (1 - max_pixels G * softmax_tokens(100 M[:, 1:-1])[:, n])
                         (G: 3x3 Gaussian, sigma 0.5, reflect padding; Attend-and-Excite's loss)
    disjoint objects     L_dj  = mean_{n < n'} cos(M_n, M_n')
    background leakage   L_bg  = mean_n cos(M_n, B)            (B: the background mask)
    L = 1.0 L_att + 0.05 L_bg + 0.05 L_dj, up to 20 AdamW updates per step, stopping early once
    L_att < 0.3 e^{-i/25}, L_bg < 0.7 e^{-i/50} and L_dj < 0.9 e^{-i/25} (i = the step's index of 50).

The scene: two 8x8 digits ``a`` (left half) and ``b`` (right half) on a 12 x 24 canvas, at random even offsets
or centred in their halves (``positions="fixed"``, the spec's simpler scene), captioned
``[sot, a, left, b, right, eot]``. :class:`SceneDenoiser` embeds the caption (token table + slot positions at
the token rows' scale, one self-attention layer and a final LayerNorm = the "text encoder"), and every block of
the image transformer (2 x 2 patches, a 6 x 12 grid, learned + fixed 2-D sine-cosine positions) has
self-attention and cross-attention from the image tokens (receivers) to the caption tokens (senders), both
:class:`GraphAttention`; the step embedding conditions the blocks by adaLN-Zero (PixArt-alpha's block: the
caption reaches the image only through the cross-attention). Maps are read with
:func:`graphattn.interpret.capture_attention` (``detach=False`` while optimising, so the gradient reaches
the placeholder embeddings through the post-softmax weights).

Why this design (``experiments/dpl_diagnose.py``, ``docs/results/diffusion.md``): the first version (slot
positions N(0, 0.02^2) beside N(0, 1) token rows, the step embedding *added* to the attention inputs, random
offsets, plain eps-loss) did not follow its caption after 12 epochs: both image halves read the a and b slots
equally (no routing), samples were judged at chance, and a DiT-style class-embedding oracle on that backbone
failed as well. With adaLN-Zero the oracle learns its labels in the same budget while the caption model needs
longer (it must first learn to route the left half to slot a); Min-SNR-gamma loss weighting (``SceneTask``)
and the fixed-position scene get it there in 12 epochs. ``conditioning="additive"`` keeps the first backbone
for that comparison; ``"adaln-pooled"`` also adds the encoded nouns to the step embedding (Imagen / SDXL's
pooled text vector; not used: the caption would bypass the cross-attention).

After DPL at each step, null-text inversion (Mokady et al.) fits the null caption's input embeddings so that
the classifier-free-guided DDIM step lands on the DDIM-inversion latent; editing is Prompt-to-Prompt's word
swap (:func:`inject_attention` replays recorded maps).

Deviations from the paper, and why: the background mask is the ground truth (outside both digits' boxes)
instead of a clustering of DDIM-inversion features; the early-stopping index ``i`` is rescaled to the paper's
50 steps (``i = 50 k / S`` at step ``k`` of ``S``); the learning rates are parameters (our embeddings are
N(0, 1), not CLIP-scale, so AdamW's default 1e-3 barely moves them); null-text inversion uses fewer inner
steps (10, not 51) and its guided step clips x0 to [-1, 1] like the sampler. Placeholders start from the
class word's embedding, and each step starts from the previous step's result.

Shapes: x_t (B, 1, 12, 24), t (B,), y (B,) = 10 a + b (100 = the null caption), emb (B, 6, D) -> eps.
The null caption (label dropout while training, the unconditional branch of classifier-free guidance) is
``[sot, NULL, left, NULL, right, eot]``: both nouns replaced by one NULL word.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.attention import GraphAttention
from graphattn.interpret import attention_hook, attention_layers, capture_attention

from .base import DiffusionModel
from .data import DiffusionData
from .dit import timestep_embedding
from .task import DiffusionTask

__all__ = ["SOT", "EOT", "LEFT", "RIGHT", "NULL", "PLACEHOLDERS", "CANVAS", "POSITIONS", "make_scenes", "locate_boxes",
           "sincos_2d", "scene_data",
           "SceneTask", "min_snr_loss", "SceneDenoiser", "caption_tokens", "cross_maps", "balance_loss", "disjoint_loss",
           "background_loss", "leakage", "thresholds", "ddim_invert", "denoise", "dynamic_prompt_learning",
           "DPL_WEIGHTS", "DPL_THRESHOLDS", "crop", "box_masks", "splice", "inject_attention", "guided_eps", "null_caption"]

SOT, EOT, LEFT, RIGHT, NULL = 10, 11, 12, 13, 14
VOCAB = 15
PLACEHOLDERS = (1, 3)             # caption slots of digit a and digit b
CANVAS = (12, 24)
POSITIONS = ("random", "fixed")
DPL_WEIGHTS = {"att": 1.0, "bg": 0.05, "dj": 0.05}
DPL_THRESHOLDS = {"att": (25.0, 0.3), "bg": (50.0, 0.7), "dj": (25.0, 0.9)}   # (alpha, beta)


# ----------------------------------------------------------------------------------------------- data

def make_scenes(images: Tensor, labels: Tensor, n: int, generator: torch.Generator,
                canvas: tuple[int, int] = CANVAS, positions: str = "random") -> tuple[Tensor, Tensor, Tensor]:
    """``n`` scenes of two random digits from ``images`` (M, 1, 8, 8) in [-1, 1].

    Returns x (n, 1, H, W) in [-1, 1], y (n,) = 10 a + b, boxes (n, 2, 2) = the (top, left) corner of digit a
    (in the left half) and b (right half); corners are even so each box is a block of 4 x 4 patches.
    ``positions="random"`` draws the corners (even offsets); ``"fixed"`` centres each digit in its half."""
    h, w = canvas
    if positions not in POSITIONS:
        raise ValueError(f"positions: expected one of {POSITIONS}, got {positions!r}")
    if images.dim() != 4 or images.shape[1:] != (1, 8, 8):
        raise ValueError(f"make_scenes: expected images (M, 1, 8, 8), got {tuple(images.shape)}")
    if h < 8 or w < 16 or h % 2 or w % 4:
        raise ValueError(f"make_scenes: canvas must be at least 8 x 16 with even height and width % 4 == 0, got {canvas}")
    pick = torch.randint(0, len(labels), (n, 2), generator=generator)
    if positions == "random":
        tops = 2 * torch.randint(0, (h - 8) // 2 + 1, (n, 2), generator=generator)
        lefts = 2 * torch.randint(0, (w // 2 - 8) // 2 + 1, (n, 2), generator=generator)
    else:
        tops = torch.full((n, 2), (h - 8) // 4 * 2, dtype=torch.long)
        lefts = torch.full((n, 2), (w // 2 - 8) // 4 * 2, dtype=torch.long)
    lefts[:, 1] += w // 2
    x = torch.full((n, 1, h, w), -1.0)
    for i in range(n):
        for k in range(2):
            r, c = int(tops[i, k]), int(lefts[i, k])
            x[i, :, r:r + 8, c:c + 8] = images[pick[i, k]]
    y = labels[pick[:, 0]] * 10 + labels[pick[:, 1]]
    return x, y, torch.stack([tops, lefts], -1)


def scene_data(digits: DiffusionData, sizes: Mapping[str, int], seed: int = 0, positions: str = "random") -> DiffusionData:
    """Scenes per split built from that split's digits (no digit image crosses splits); ``meta["boxes"]``."""
    g = torch.Generator().manual_seed(seed)
    splits, boxes = {}, {}
    for name in ("train", "valid", "test"):
        x, y, b = make_scenes(*digits[name], int(sizes[name]), g, positions=positions)
        splits[name], boxes[name] = (x, y), b
    return DiffusionData(splits, num_classes=100, meta={"in_channels": 1, "image_size": CANVAS[0],
                                                        "width": CANVAS[1], "boxes": boxes})


class SceneTask(DiffusionTask):
    """The ``diffusion`` task on :func:`scene_data` (pass the data): the DDPM loss with captions y = 10 a + b.

    ``snr_gamma`` (training only; evaluation stays the plain MSE): Min-SNR-gamma weighting (Hang et al.,
    "Efficient Diffusion Training via Min-SNR Weighting Strategy", ICCV 2023) of each image's eps-MSE by
    ``min(SNR_t, gamma) / SNR_t`` with ``SNR_t = abar_t / (1 - abar_t)``: the many nearly clean steps, whose
    sharp-edge noise dominates the plain loss, stop drowning the noisy steps where the caption decides what is
    drawn."""

    def __init__(self, config: Mapping[str, Any], data: DiffusionData | None = None,
                 snr_gamma: float | None = None) -> None:
        super().__init__(config, data)
        if snr_gamma is not None and not snr_gamma > 0:
            raise ValueError(f"snr_gamma: expected a positive float or None, got {snr_gamma!r}")
        self.snr_gamma = snr_gamma

    def build_model(self) -> nn.Module:
        raise TypeError("SceneTask trains a SceneDenoiser built by the caller; pass the model to the Trainer")

    def loss(self, model: DiffusionModel, batch, phase: str):
        if self.snr_gamma is None:
            return model.loss(batch), {}
        return min_snr_loss(model, batch, self.snr_gamma), {}


def min_snr_loss(model: DiffusionModel, batch: Mapping[str, Tensor], gamma: float) -> Tensor:
    """``mean_i min(SNR_t_i, gamma) / SNR_t_i * mean_pixels (eps_i - eps_theta)^2`` of a task batch
    (labels dropped to the null caption where ``batch["drop"]``)."""
    y = torch.where(batch["drop"], torch.full_like(batch["y"], model.null_class), batch["y"])
    sched, t = model.schedule, batch["t"]
    err = ((model(sched.q_sample(batch["x"], t, batch["noise"]), t, y) - batch["noise"]) ** 2).flatten(1).mean(1)
    abar = sched.abar(t)
    snr = abar / (1 - abar)
    return (snr.clamp(max=gamma) / snr * err).mean()


def box_masks(boxes: Tensor, canvas: tuple[int, int] = CANVAS, patch: int = 2) -> tuple[Tensor, Tensor]:
    """Object masks (n, 2, P) of the two boxes and the background mask (n, P) on the patch grid."""
    gh, gw = canvas[0] // patch, canvas[1] // patch
    rows = torch.arange(gh)[:, None].expand(gh, gw).reshape(-1)
    cols = torch.arange(gw)[None, :].expand(gh, gw).reshape(-1)
    top, left = boxes[..., 0:1] // patch, boxes[..., 1:2] // patch            # (n, 2, 1)
    obj = (rows >= top) & (rows < top + 8 // patch) & (cols >= left) & (cols < left + 8 // patch)
    return obj.float(), (~obj.any(1)).float()


def locate_boxes(x: Tensor, positions: str = "random") -> Tensor:
    """Where the digits of generated scenes ``x`` (n, 1, H, W) are: per half, the allowed corner
    (:func:`make_scenes`' offsets) whose 8x8 window holds the most ink. (n, 2, 2) like ``boxes``; a sample's
    digit can sit anywhere its caption allows, so judging it at a test scene's box would misjudge it."""
    n, (h, w) = len(x), x.shape[-2:]
    if positions not in POSITIONS:
        raise ValueError(f"positions: expected one of {POSITIONS}, got {positions!r}")
    _, _, fixed = make_scenes(torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), 1, torch.Generator(),
                              (h, w), "fixed")
    if positions == "fixed":
        return fixed.expand(n, 2, 2).clone()
    ink = F.avg_pool2d((x.clamp(-1, 1) + 1) / 2, 8, stride=2)[:, 0]         # (n, (h-8)/2+1, (w-8)/2+1) by corner/2
    tops, lefts = torch.arange(0, h - 7, 2), torch.arange(0, w // 2 - 7, 2)
    out = torch.zeros(n, 2, 2, dtype=torch.long)
    for k, shift in enumerate((0, w // 2)):
        win = ink[:, tops[:, None] // 2, (lefts[None, :] + shift) // 2].flatten(1)   # (n, rows * cols)
        best = win.argmax(1)
        out[:, k, 0], out[:, k, 1] = tops[best // len(lefts)], lefts[best % len(lefts)] + shift
    return out


def crop(x: Tensor, boxes: Tensor, k: int) -> Tensor:
    """The 8x8 box of object ``k`` of every scene: (n, 1, H, W) -> (n, 1, 8, 8)."""
    return torch.stack([x[i, :, int(r):int(r) + 8, int(c):int(c) + 8] for i, (r, c) in enumerate(boxes[:, k])])


# ----------------------------------------------------------------------------------------------- model

def sincos_2d(rows: int, cols: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings (MAE / DiT style) of a ``rows x cols`` grid, row-major:
    half the channels encode the row, half the column. (1, rows * cols, dim)"""
    if dim % 4:
        raise ValueError(f"sincos_2d: dim must be divisible by 4, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    r = torch.arange(rows, dtype=torch.float32)[:, None].expand(rows, cols).reshape(-1, 1) * freqs
    c = torch.arange(cols, dtype=torch.float32)[None, :].expand(rows, cols).reshape(-1, 1) * freqs
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], -1)[None]


def caption_tokens(y: Tensor) -> Tensor:
    """``y = 10 a + b`` -> ``[sot, a, left, b, right, eot]`` (B, 6); ``y = 100`` -> null nouns."""
    null = y >= 100
    a, b = torch.where(null, NULL, y // 10), torch.where(null, NULL, y % 10)
    fixed = lambda v: torch.full_like(y, v)   # noqa: E731
    return torch.stack([fixed(SOT), a, fixed(LEFT), b, fixed(RIGHT), fixed(EOT)], 1)


class SceneBlock(nn.Module):
    """``h += SelfAttn(LN h + c);  h += CrossAttn(LN h + c, ctx);  h += MLP(LN h)`` (``c`` = W (step embedding))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.cond = nn.Linear(dim, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = GraphAttention(dim, heads=heads)
        self.cross = GraphAttention(dim, heads=heads, src_dim=dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, h: Tensor, c: Tensor, ctx: Tensor) -> Tensor:
        c = self.cond(c)[:, None]
        h = h + self.attn(self.norm1(h) + c)
        h = h + self.cross(self.norm2(h) + c, x_src=ctx)
        return h + self.mlp(self.norm3(h))


class SceneBlockAda(nn.Module):
    """PixArt-alpha's block: adaLN-Zero on the step embedding around self-attention and the MLP (as in
    :class:`vision.diffusion.dit.DiTBlock`), plain cross-attention to the caption in between:

        (s1, k1, g1, s2, k2, g2) = W_ada SiLU(c)                       (W_ada zero-initialised)
        h += g1 SelfAttn(LN(h) (1 + k1) + s1);  h += CrossAttn(LN h, ctx);  h += g2 MLP(LN(h) (1 + k2) + s2)
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = GraphAttention(dim, heads=heads)
        self.cross = GraphAttention(dim, heads=heads, src_dim=dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h: Tensor, c: Tensor, ctx: Tensor) -> Tensor:
        s1, k1, g1, s2, k2, g2 = self.ada(c)[:, None].chunk(6, -1)                       # each (B, 1, D)
        h = h + g1 * self.attn(self.norm1(h) * (1 + k1) + s1)
        h = h + self.cross(self.norm2(h), x_src=ctx)
        return h + g2 * self.mlp(self.norm3(h) * (1 + k2) + s2)


CONDITIONING = ("adaln", "adaln-pooled", "additive")


class SceneDenoiser(DiffusionModel):
    """Caption-conditioned noise predictor on two-digit scenes (see the module docstring).

    Args: config (the task's timesteps, noise_schedule), data (:func:`scene_data`), dim = 64, layers = 3,
    heads = 2, patch = 2, conditioning = ``"adaln"`` (:class:`SceneBlockAda`) | ``"adaln-pooled"`` (also the
    encoded nouns added to the step embedding) | ``"additive"`` (the first design, :class:`SceneBlock`).
    """

    def __init__(self, config: Mapping[str, Any], data: DiffusionData, dim: int = 64, layers: int = 3,
                 heads: int = 2, patch: int = 2, conditioning: str = "adaln") -> None:
        super().__init__(config, data)
        if conditioning not in CONDITIONING:
            raise ValueError(f"conditioning: expected one of {CONDITIONING}, got {conditioning!r}")
        self.conditioning = conditioning
        self.height, self.width = self.image_size, int(data.meta["width"])
        if self.height % patch or self.width % patch:
            raise ValueError(f"patch {patch} must divide the canvas {self.height} x {self.width}")
        self.patch, self.dim, self.grid = patch, dim, (self.height // patch, self.width // patch)
        self.tokens = nn.Embedding(VOCAB, dim)
        self.slot = nn.Parameter(torch.randn(6, dim))           # same scale as the N(0, 1) token rows
        self.text_norm = nn.LayerNorm(dim)
        self.text_attn = GraphAttention(dim, heads=heads)
        self.text_out = nn.LayerNorm(dim)                        # the text encoder's final norm (CLIP's ln_final)
        self.embed = nn.Linear(patch * patch, dim)
        self.register_buffer("pos_fixed", sincos_2d(*self.grid, dim), persistent=False)
        self.pos = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1], dim) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        block = SceneBlock if conditioning == "additive" else SceneBlockAda
        self.blocks = nn.ModuleList(block(dim, heads) for _ in range(layers))
        if conditioning == "adaln-pooled":                       # Imagen / SDXL: pooled text into the step embedding
            self.pool = nn.Linear(2 * dim, dim)
        if conditioning != "additive":
            self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
            nn.init.zeros_(self.final_ada[1].weight)
            nn.init.zeros_(self.final_ada[1].bias)
        else:
            self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, patch * patch)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def caption_embeddings(self, y: Tensor) -> Tensor:
        """The caption's input embeddings (rows of the token table), what DPL optimises. (B, 6, D)"""
        return self.tokens(caption_tokens(y))

    def encode(self, emb: Tensor) -> Tensor:
        """The "text encoder": slot positions + one self-attention layer. (B, 6, D) -> (B, 6, D)"""
        e = emb + self.slot
        return self.text_out(e + self.text_attn(self.text_norm(e)))

    def t_cond(self, t: Tensor) -> Tensor:
        """The step embedding ``c`` (B, D) every block adds to its attention inputs."""
        return self.t_mlp(timestep_embedding(t, self.dim))

    def cross_names(self) -> list[str]:
        return [f"blocks.{i}.cross" for i in range(len(self.blocks))]

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor, emb: Tensor | None = None) -> Tensor:
        b, p, (gh, gw) = x_t.shape[0], self.patch, self.grid
        if x_t.dim() != 4 or tuple(x_t.shape[1:]) != (1, self.height, self.width):
            raise ValueError(f"SceneDenoiser: expected x_t (B, 1, {self.height}, {self.width}), got {tuple(x_t.shape)}")
        ctx = self.encode(self.caption_embeddings(y) if emb is None else emb)
        c = self.t_cond(t)                                                                 # (B, D)
        if self.conditioning == "adaln-pooled":
            c = c + self.pool(ctx[:, list(PLACEHOLDERS)].flatten(1))
        tok = x_t.reshape(b, gh, p, gw, p).permute(0, 1, 3, 2, 4).reshape(b, gh * gw, p * p)
        h = self.embed(tok) + self.pos_fixed + self.pos
        for block in self.blocks:
            h = block(h, c, ctx)
        h = self.norm(h)
        if self.conditioning != "additive":
            shift, scale = self.final_ada(c)[:, None].chunk(2, -1)
            h = h * (1 + scale) + shift
        out = self.out(h)                                                                  # (B, P, p*p)
        return out.reshape(b, gh, gw, p, p).permute(0, 1, 3, 2, 4).reshape(b, 1, self.height, self.width)


# ----------------------------------------------------------------------------------------------- maps and losses

def cross_maps(store: Mapping[str, list[Tensor]], names: list[str], call: int = -1) -> Tensor:
    """Cross-attention maps ``M`` (B, P, L): the weights (B, H, P, L) of call ``call`` of each layer in
    ``names`` averaged over heads and layers."""
    missing = [n for n in names if n not in store]
    if missing:
        raise ValueError(f"no attention recorded for layers {missing}; recorded: {sorted(store)}")
    return torch.stack([store[n][call].mean(1) for n in names]).mean(0)


def _gaussian3(sigma: float = 0.5) -> Tensor:
    r = torch.tensor([-1.0, 0.0, 1.0])
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def balance_loss(maps: Tensor, grid: tuple[int, int], nouns: tuple[int, ...] = PLACEHOLDERS,
                 reduction: str = "max", sigma: float = 0.5) -> Tensor:
    """Attend-and-Excite's balancing loss per sample (B,): drop the first and last token, softmax(100 M)
    over the rest, smooth each noun's map (3x3 Gaussian, reflect padding), ``1 - max``; max (or mean) over
    nouns. ``nouns`` index the full caption."""
    if reduction not in ("max", "mean"):
        raise ValueError(f"reduction: expected 'max' or 'mean', got {reduction!r}")
    b, p, length = maps.shape
    if p != grid[0] * grid[1]:
        raise ValueError(f"maps have {p} pixels, grid {grid} has {grid[0] * grid[1]}")
    inner = (100 * maps[:, :, 1:length - 1]).softmax(-1)                    # (B, P, L - 2)
    m = inner[:, :, [n - 1 for n in nouns]].transpose(1, 2).reshape(b * len(nouns), 1, *grid)
    m = F.conv2d(F.pad(m, (1, 1, 1, 1), mode="reflect"), _gaussian3(sigma).to(m)[None, None])
    best = m.flatten(1).amax(1).view(b, len(nouns))
    loss = 1 - best
    return loss.amax(1) if reduction == "max" else loss.mean(1)


def disjoint_loss(maps: Tensor, nouns: tuple[int, ...] = PLACEHOLDERS) -> Tensor:
    """Mean cosine similarity of the noun maps over pairs (B,)."""
    cols = maps[:, :, list(nouns)]                                           # (B, P, n)
    pairs = [(i, j) for i in range(len(nouns)) for j in range(i + 1, len(nouns))]
    return torch.stack([F.cosine_similarity(cols[..., i], cols[..., j], dim=1) for i, j in pairs]).mean(0)


def background_loss(maps: Tensor, background: Tensor, nouns: tuple[int, ...] = PLACEHOLDERS) -> Tensor:
    """Mean over nouns of cos(M_n, B) (B,); ``background`` (B, P) in {0, 1}."""
    return torch.stack([F.cosine_similarity(maps[:, :, n], background, dim=1) for n in nouns]).mean(0)


def leakage(maps: Tensor, objects: Tensor, background: Tensor, nouns: tuple[int, ...] = PLACEHOLDERS) -> dict[str, Tensor]:
    """Per sample (B,): ``outside`` = mean over nouns of the map mass (map normalised over pixels) outside
    that noun's own box; ``other`` = mass on the other object's box; ``background`` = mass outside both
    boxes; ``overlap`` = cos(M_a, M_b)."""
    cols = maps[:, :, list(nouns)]
    dist = cols / cols.sum(1, keepdim=True).clamp_min(1e-12)                 # (B, P, n)
    own = (dist * objects.transpose(1, 2)).sum(1)                             # (B, n)
    other = (dist * objects.flip(1).transpose(1, 2)).sum(1)
    bg = (dist * background[:, :, None]).sum(1)
    return {"outside": (1 - own).mean(1), "other": other.mean(1), "background": bg.mean(1),
            "overlap": disjoint_loss(maps, nouns)}


def thresholds(k: int, steps: int) -> dict[str, float]:
    """DPL's early-stopping thresholds ``beta exp(-i / alpha)`` at step ``k`` of ``steps`` (i = 50 k / steps)."""
    i = 50.0 * k / steps
    return {name: beta * math.exp(-i / alpha) for name, (alpha, beta) in DPL_THRESHOLDS.items()}


# ----------------------------------------------------------------------------------------------- sampling

def _pairs(model: SceneDenoiser, steps: int) -> list[tuple[int, int]]:
    seq = model.schedule.timesteps_for(steps)
    return list(zip(seq, seq[1:] + [-1]))


@torch.no_grad()
def ddim_invert(model: SceneDenoiser, x0: Tensor, y: Tensor, steps: int, trajectory: bool = False):
    """Deterministic DDIM inversion ``x_0 -> x_T`` along the sampler's steps (eps taken at the step reached,
    caption ``y``, no guidance). ``trajectory=True`` also returns the latents in sampling order:
    ``traj[k]`` starts sampling step ``k`` (``traj[0] = x_T``, ``traj[steps] = x_0``)."""
    x, sched = x0.clone(), model.schedule
    traj = [x]
    for t, t_prev in reversed(_pairs(model, steps)):
        tt = torch.full((len(y),), t, dtype=torch.long)
        eps = model(x, tt, y)
        a, an = sched._bcast(sched.abar(torch.full_like(tt, t_prev)), x), sched._bcast(sched.abar(tt), x)
        x = an.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt() + (1 - an).sqrt() * eps   # DDIM run backwards
        traj.append(x)
    return (x, traj[::-1]) if trajectory else x


def guided_eps(model: SceneDenoiser, x: Tensor, t: Tensor, cond: Tensor, null: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance with caption input embeddings: ``eps_u + w (eps_c - eps_u)``; the conditional
    call runs first, then the unconditional one (the order attention stores record them in)."""
    eps_c = model(x, t, None, cond)
    if guidance == 1.0:
        return eps_c
    eps_u = model(x, t, None, null)
    return eps_u + guidance * (eps_c - eps_u)


def null_caption(model: SceneDenoiser, n: int) -> Tensor:
    """Input embeddings of the null caption (the label dropped while training). (n, 6, D)"""
    return model.caption_embeddings(torch.full((n,), 100, dtype=torch.long))


def splice(base: Tensor, placeholders: Tensor) -> Tensor:
    """``base`` (B, 6, D) with the placeholder slots replaced by ``placeholders`` (B, 2, D)."""
    out = base.clone()
    out[:, list(PLACEHOLDERS)] = placeholders
    return out


@contextmanager
def _null() -> Iterator[dict]:
    yield {}


def _replay(recorded: list[Tensor], calls: dict[str, int], name: str, until: int):
    def hook(_layer, weights, _info):
        c = calls[name]
        calls[name] += 1
        return recorded[c] if c < until else None
    return hook


@contextmanager
def _hooks(pairs: list) -> Iterator[None]:
    if not pairs:
        yield
        return
    (layer, hook), rest = pairs[0], pairs[1:]
    with attention_hook(layer, hook), _hooks(rest):
        yield


@contextmanager
def inject_attention(model: nn.Module, source: Mapping[str, list[Tensor]], until: Mapping[str, int]) -> Iterator[None]:
    """Prompt-to-Prompt's map injection: inside the ``with`` block, call ``c`` of layer ``name`` uses the weights
    recorded in ``source[name][c]`` while ``c < until[name]`` (its own weights afterwards)."""
    layers = attention_layers(model)
    unknown = [n for n in until if n not in layers or n not in source]
    if unknown:
        raise ValueError(f"inject_attention: no layer or no recorded weights for {unknown}")
    calls = {name: 0 for name in until}
    with _hooks([(layers[n], _replay(source[n], calls, n, int(k))) for n, k in until.items()]):
        yield


@torch.no_grad()
def denoise(model: SceneDenoiser, x_T: Tensor, y: Tensor, steps: int, embeddings: list[Tensor] | None = None,
            record: bool = False, inject: tuple[Mapping[str, list[Tensor]], Mapping[str, int]] | None = None,
            guidance: float = 1.0, null_embeddings: list[Tensor] | None = None):
    """DDIM (eta = 0, x0 clipped to [-1, 1]) from ``x_T`` with caption ``y`` and classifier-free guidance
    ``guidance`` (1 = none); ``embeddings[k]`` / ``null_embeddings[k]`` (B, 6, D) override the caption's / the
    null caption's input embeddings at step ``k``. ``record`` also returns every attention layer's weights
    per call (``{name: [...]}``; one call per step, or (conditional, unconditional) per step with guidance);
    ``inject = (recorded, {layer: calls to replay})`` replays recorded maps for the first calls
    (Prompt-to-Prompt)."""
    x = x_T.clone()
    null = null_caption(model, len(y))
    with (capture_attention(model) if record else _null()) as store, \
            (inject_attention(model, *inject) if inject else _null()):
        for k, (t, t_prev) in enumerate(_pairs(model, steps)):
            tt = torch.full((len(y),), t, dtype=torch.long)
            cond = model.caption_embeddings(y) if embeddings is None else embeddings[k]
            eps = guided_eps(model, x, tt, cond, null if null_embeddings is None else null_embeddings[k], guidance)
            x = model.schedule.ddim_step(x, tt, torch.full_like(tt, t_prev), eps, clip=1.0)
    return (x, store) if record else x


def dynamic_prompt_learning(model: SceneDenoiser, x_T: Tensor, y: Tensor, background: Tensor, steps: int,
                            inner: int = 20, lr: float = 0.05, weights: Mapping[str, float] = DPL_WEIGHTS,
                            reduction: str = "max", guidance: float = 1.0, trajectory: list[Tensor] | None = None,
                            null_inner: int = 10, null_lr: float = 0.01,
                            progress: Callable | None = None) -> tuple[list[Tensor], list[Tensor], dict]:
    """DPL along the DDIM trajectory from ``x_T``: at each step ``k`` up to ``inner`` AdamW updates of the two
    placeholder embeddings of every scene (the model stays frozen; a scene stops once its three losses are
    under the step's thresholds; ``inner = 0`` keeps the plain words). Then, with ``guidance != 1`` and the
    DDIM-inversion ``trajectory``, null-text inversion: up to ``null_inner`` Adam updates (lr
    ``null_lr (1 - i / 100)``) of the null caption's input embeddings so that the guided DDIM step lands on
    ``trajectory[k + 1]``; the step is taken with them. Returns the per-step caption input embeddings
    (``steps`` tensors (B, 6, D)), the per-step null embeddings, and a log."""
    for prm in model.parameters():
        prm.requires_grad_(False)
    base = model.caption_embeddings(y).detach()
    ph = base[:, list(PLACEHOLDERS)].clone()
    names = model.cross_names()
    x, out, nulls, log = x_T.clone(), [], [], {"updates": [], "final_losses": [], "null_mse": []}
    null = null_caption(model, len(y)).detach()
    pairs = _pairs(model, steps)
    for k, (t, t_prev) in enumerate(progress(pairs) if progress else pairs):
        th = thresholds(k, len(pairs))
        tt = torch.full((len(y),), t, dtype=torch.long)
        ph = ph.detach().requires_grad_(True)
        opt = torch.optim.AdamW([ph], lr=lr)
        updates = torch.zeros(len(y))
        for it in range(inner + 1):
            with capture_attention(model, detach=False) as store:
                model(x, tt, y, splice(base, ph))
            maps = cross_maps(store, names)
            losses = {"att": balance_loss(maps, model.grid, reduction=reduction),
                      "bg": background_loss(maps, background), "dj": disjoint_loss(maps)}
            active = ~((losses["att"] < th["att"]) & (losses["bg"] < th["bg"]) & (losses["dj"] < th["dj"]))
            if not bool(active.any()) or it == inner:
                break
            total = sum(weights[n] * losses[n] for n in losses)                  # (B,)
            opt.zero_grad()
            (total * active).sum().backward()
            before = ph.detach().clone()
            opt.step()
            with torch.no_grad():
                ph.copy_(torch.where(active[:, None, None], ph, before))          # stopped scenes keep theirs
            updates += active.float()
        log["updates"].append(float(updates.mean()))
        log["final_losses"].append({n: float(v.detach().mean()) for n, v in losses.items()})
        emb = splice(base, ph.detach())
        out.append(emb)
        t_p = torch.full_like(tt, t_prev)
        if guidance != 1.0 and trajectory is not None:
            with torch.no_grad():
                eps_c = model(x, tt, None, emb)
            null = null.detach().requires_grad_(True)
            nopt = torch.optim.Adam([null], lr=null_lr * (1 - 50.0 * k / len(pairs) / 100))
            for _ in range(null_inner):
                eps_u = model(x, tt, None, null)
                step = model.schedule.ddim_step(x, tt, t_p, eps_u + guidance * (eps_c - eps_u), clip=1.0)
                loss = F.mse_loss(step, trajectory[k + 1])
                nopt.zero_grad()
                loss.backward()
                nopt.step()
            log["null_mse"].append(float(loss.detach()))
        nulls.append(null.detach())
        with torch.no_grad():
            eps = guided_eps(model, x, tt, emb, nulls[-1], guidance)
            x = model.schedule.ddim_step(x, tt, t_p, eps, clip=1.0)
    return out, nulls, log
