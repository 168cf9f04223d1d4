r"""The Dynamical Systems Framework (DSF): attention, selective SSMs and gated RNNs as one linear
time-varying system.

Sieber, Amo Alonso, Didier, Zeilinger, Orvieto, "Understanding the differences in Foundation Models:
Attention, State Space Models, and Recurrent Neural Networks", NeurIPS 2024, https://arxiv.org/abs/2405.15731

.. math::
    h_i = \Lambda_i h_{i-1} + B_i x_i, \qquad y_i = C_i h_i + D_i x_i, \qquad h_0 = 0

unrolled as ``y = Phi x`` with the block lower-triangular operator
:math:`\Phi_{ij} = C_i \Lambda_i \cdots \Lambda_{j+1} B_j` (``j < i``), :math:`\Phi_{ii} = C_i B_i + D_i`.

Every model class the paper covers has a *diagonal, per-channel* form: channel ``c`` of the input drives
its own ``n`` states (the "state expansion"; the state size is ``N = n d``), so a system is four tensors

* ``lam`` (..., T, d, n): the diagonal of :math:`\Lambda_i` (the decay / forget gate: the "edge decay");
* ``b`` (..., T, d, n): :math:`B_i` maps channel ``c`` of ``x_i`` into its states, ``h[c] += b[c] x[c]``;
* ``c`` (..., T, d, n): :math:`C_i` reads them back, ``y[c] = c[c] . h[c]``;
* ``d`` (..., T, d) or None: the diagonal skip :math:`D_i`;

and, for the qLSTM, a fixed input map ``w_in`` (d, d_in) applied first (:math:`B_i = \mathrm{diag}(i_i) W`).
:meth:`DSF.recurrent` runs the recurrence, :meth:`DSF.parallel` the unrolled sum, and
:meth:`DSF.materialise_phi` gives :math:`\Phi` as a ``(T, T, d, d_in)`` block tensor (or the flat
``(T d, T d_in)`` matrix) — the attention map of an attention layer, the kernel of an SSM, the gate
products of an RNN, all read the same way.

Converters (their inputs are already-projected sequences, so any layer can be read):

* :func:`linear_attention` — causal linear attention, unnormalised or row-normalised (``Lam = I``);
* :func:`normalized_state_attention` — the same normalised attention with the normaliser moved into the
  transition, ``Lam_i = eta_{i-1} / eta_i``;
* :func:`normalized_attention` — the paper's proposed attention: raw ``q . k`` over ``exp(w^T u_i)``;
* :func:`selective_ssm` — S6: ``Lam_i = exp(-Delta_i a)``, ``B_i = Delta_i b_i``, ``C_i = c_i``;
* :func:`qlstm` — the quasi-LSTM (gates from the current input only), plain or with the reversed-sigmoid
  forget gate ``f_i = sigmoid(-W_f u_i)^a``, which equals the S6 transition.

Letters in shape comments: T tokens, S senders (tokens j), d channels, n states per channel, m features.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from graphattn.attention import elu_feature_map

__all__ = ["DSF", "linear_scan", "FEATURE_MAPS", "feature_map", "random_features", "taylor_features", "linear_attention",
           "normalized_state_attention", "normalized_attention", "selective_ssm", "qlstm", "softmax_phi"]


def _check(name: str, x: Tensor, dims: int, what: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor {what}, got {type(x).__name__}")
    if x.dim() < dims:
        raise ValueError(f"{name} must have shape {what} (at least {dims} dimensions), got {tuple(x.shape)}")


@dataclass
class DSF:
    """One diagonal, per-channel linear time-varying system (module docstring).

    Shapes: lam, b, c (..., T, d, n); d (..., T, d) or None; w_in (d, d_in) or None.
    """

    lam: Tensor
    b: Tensor
    c: Tensor
    d: Tensor | None = None
    w_in: Tensor | None = None

    def __post_init__(self) -> None:
        _check("lam", self.lam, 3, "(..., T, d, n)")
        for name in ("b", "c"):
            t = getattr(self, name)
            _check(name, t, 3, "(..., T, d, n)")
            if t.shape != self.lam.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)} but lam has {tuple(self.lam.shape)}; "
                                 "lam, b and c must all be (..., T, d, n)")
        if self.d is not None and self.d.shape != self.lam.shape[:-1]:
            raise ValueError(f"d must have shape {tuple(self.lam.shape[:-1])} (..., T, d), got {tuple(self.d.shape)}")
        if self.w_in is not None and (self.w_in.dim() != 2 or self.w_in.shape[0] != self.channels):
            raise ValueError(f"w_in must have shape ({self.channels}, d_in), got {tuple(self.w_in.shape)}")

    @property
    def length(self) -> int:
        return self.lam.shape[-3]

    @property
    def channels(self) -> int:
        return self.lam.shape[-2]

    @property
    def state_expansion(self) -> int:
        return self.lam.shape[-1]

    @property
    def state_size(self) -> int:
        """N = n d."""
        return self.channels * self.state_expansion

    def _input(self, x: Tensor) -> Tensor:
        """Check ``x`` (..., T, d_in) and map it through ``w_in``: (..., T, d)."""
        d_in = self.channels if self.w_in is None else self.w_in.shape[1]
        if x.dim() < 2 or x.shape[-2:] != (self.length, d_in):
            raise ValueError(f"input must have shape (..., T={self.length}, d_in={d_in}), got {tuple(x.shape)}")
        return x if self.w_in is None else x @ self.w_in.transpose(0, 1).to(x.dtype)

    def recurrent(self, x: Tensor, h0: Tensor | None = None, return_state: bool = False):
        """Run ``h_i = Lam_i h_{i-1} + B_i x_i``, ``y_i = C_i h_i + D_i x_i`` step by step.

        Args:
            x: (..., T, d_in). h0: initial state (..., d, n) (default zeros).
            return_state: also return the final state (for chunked / streaming use).

        Returns: y (..., T, d) [, h_T (..., d, n)].
        """
        u = self._input(x)
        drive = self.b * u.unsqueeze(-1)                                  # (..., T, d, n)
        if h0 is not None:                                                # h0 enters as Lam_1 h0 + B_1 x_1
            first = drive[..., :1, :, :] + self.lam[..., :1, :, :] * h0.unsqueeze(-3)
            drive = torch.cat([first, drive[..., 1:, :, :]], -3)
        states = linear_scan(self.lam, drive)                             # (..., T, d, n)
        y = (self.c * states).sum(-1)                                     # (..., T, d)
        if self.d is not None:
            y = y + self.d * u
        return (y, states[..., -1, :, :]) if return_state else y

    def step(self, h: Tensor, x_i: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """One recurrent step at position ``i``: ``(h_{i-1} (..., d, n), x_i (..., d_in)) -> (y_i, h_i)``."""
        u = x_i if self.w_in is None else x_i @ self.w_in.transpose(0, 1).to(x_i.dtype)
        h = self.lam[..., i, :, :] * h + self.b[..., i, :, :] * u.unsqueeze(-1)
        y = (self.c[..., i, :, :] * h).sum(-1)
        return (y if self.d is None else y + self.d[..., i, :] * u), h

    def kernel(self) -> Tensor:
        """Per-channel scalar kernel ``K[i, j, c] = sum_s c_i[c,s] (prod_{l=j+1..i} lam_l[c,s]) b_j[c,s]``
        for ``j <= i`` and 0 above the diagonal, without ``D``: (..., T, S, d).

        The products of ``lam`` are taken as ``exp`` of differences of cumulative ``log|lam|`` (with the
        signs tracked separately), masked before the exponential so nothing overflows.
        """
        lam = self.lam
        logabs = lam.abs().clamp_min(torch.finfo(lam.dtype).tiny).log()
        cum = logabs.cumsum(-3)                                           # (..., T, d, n)
        diff = cum.unsqueeze(-3) - cum.unsqueeze(-4)                      # (..., T, S, d, n) = L_i - L_j
        t = self.length
        causal = torch.ones(t, t, dtype=torch.bool, device=lam.device).tril()[:, :, None, None]
        decay = diff.masked_fill(~causal, float("-inf")).exp()
        negative = (lam < 0).to(lam.dtype).cumsum(-3)                     # sign of the product
        parity = (negative.unsqueeze(-3) - negative.unsqueeze(-4)).remainder(2)
        decay = decay * (1 - 2 * parity)
        zero = (lam == 0).to(lam.dtype).cumsum(-3)                        # an exact zero kills the product
        decay = decay * ((zero.unsqueeze(-3) - zero.unsqueeze(-4)) == 0).to(lam.dtype)
        return (self.c.unsqueeze(-3) * decay * self.b.unsqueeze(-4)).sum(-1)

    def parallel(self, x: Tensor) -> Tensor:
        """The unrolled sum ``y_i = sum_{j<=i} Phi_ij x_j`` (O(T^2)): (..., T, d_in) -> (..., T, d)."""
        u = self._input(x)
        y = torch.einsum("...tsc,...sc->...tc", self.kernel(), u)
        return y if self.d is None else y + self.d * u

    def materialise_phi(self, flat: bool = False) -> Tensor:
        """The causal operator ``Phi`` with ``y = Phi x``: blocks ``(..., T, S, d, d_in)``, or with ``flat``
        the ``(..., T d, T d_in)`` matrix (row ``i d + c``, column ``j d_in + c'``)."""
        k = self.kernel()                                                 # (..., T, S, d)
        if self.d is not None:
            eye = torch.eye(self.length, dtype=k.dtype, device=k.device)
            k = k + eye[:, :, None] * self.d.unsqueeze(-2)
        blocks = torch.diag_embed(k)                                      # (..., T, S, d, d)
        if self.w_in is not None:
            blocks = blocks @ self.w_in.to(blocks.dtype)                  # (..., T, S, d, d_in)
        if not flat:
            return blocks
        t, s, d, d_in = blocks.shape[-4:]
        return blocks.transpose(-3, -2).reshape(*blocks.shape[:-4], t * d, s * d_in)

    materialize_phi = materialise_phi

    def mixing_weights(self) -> Tensor:
        """``Phi`` as token-to-token weights when it is the same for every channel (attention): (..., T, S).
        Raises when the channels differ (SSMs, RNNs: use :meth:`kernel`)."""
        k = self.kernel()
        if not torch.allclose(k, k[..., :1].expand_as(k)):
            raise ValueError("the operator differs across channels; read kernel() (..., T, S, d) instead")
        return k[..., 0]


# ----------------------------------------------------------------------------------- the scan

class _LinearScan(torch.autograd.Function):
    """``h_t = a_t * h_{t-1} + x_t`` (h_0 = 0) along dim 0, with a hand-written backward (the reverse scan
    ``g_t = dh_t + a_{t+1} g_{t+1}``): one fused multiply-add per step each way instead of autograd's
    per-step graph, which is what makes the S6 state (B, T, d, n) affordable on a CPU."""

    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor) -> Tensor:                      # (T, ...) each
        h = torch.empty_like(x)
        h[0] = x[0]
        for t in range(1, x.shape[0]):
            torch.addcmul(x[t], a[t], h[t - 1], out=h[t])
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h = ctx.saved_tensors
        g = torch.empty_like(grad_h)
        g[-1] = grad_h[-1]
        for t in range(grad_h.shape[0] - 2, -1, -1):
            torch.addcmul(grad_h[t], a[t + 1], g[t + 1], out=g[t])
        grad_a = torch.zeros_like(a)
        grad_a[1:] = g[1:] * h[:-1]
        return grad_a, g


def linear_scan(lam: Tensor, drive: Tensor) -> Tensor:
    """All states of ``h_i = lam_i * h_{i-1} + drive_i`` (h_0 = 0), elementwise: (..., T, d, n) -> same."""
    if lam.shape != drive.shape:
        lam, drive = torch.broadcast_tensors(lam, drive)
    a = lam.movedim(-3, 0).contiguous()                                   # (T, ..., d, n): time-major
    x = drive.movedim(-3, 0).contiguous()
    return _LinearScan.apply(a, x).movedim(0, -3)


# ----------------------------------------------------------------------------------- feature maps

def feature_map(name: str, x: Tensor) -> Tensor:
    """``phi(x)`` of a named feature map: ``"elu"`` (ELU + 1), ``"identity"`` (raw), ``"relu"``."""
    try:
        fn = FEATURE_MAPS[name]
    except KeyError:
        raise ValueError(f"unknown feature map {name!r}; expected one of {sorted(FEATURE_MAPS)}") from None
    return fn(x)


FEATURE_MAPS = {"elu": elu_feature_map, "identity": lambda x: x, "relu": F.relu}


def random_features(x: Tensor, omega: Tensor) -> Tensor:
    r"""Positive random features of the exponential kernel (Choromanski et al., 2021):
    :math:`\phi(x) = \exp(\omega^T x - |x|^2/2)/\sqrt{m}` with ``omega`` (D, m) ~ N(0, I), so that
    :math:`E[\phi(x)^T\phi(y)] = \exp(x^T y)`. Shapes: x (..., D) -> (..., m)."""
    return torch.exp(x @ omega - 0.5 * (x * x).sum(-1, keepdim=True)) / math.sqrt(omega.shape[1])


def taylor_features(x: Tensor, degree: int) -> Tensor:
    r"""Features of the degree-``p`` Taylor expansion of :math:`\exp(x^T y) \approx \sum_{k\le p}
    (x^T y)^k / k!`: all ``k``-fold outer products scaled by :math:`1/\sqrt{k!}`, so
    ``m = sum_k D^k``. Shapes: x (..., D) -> (..., m)."""
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    parts, power = [torch.ones_like(x[..., :1])], torch.ones_like(x[..., :1])
    for k in range(1, degree + 1):
        power = (power.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)      # (..., D^k)
        parts.append(power / math.sqrt(math.factorial(k)))
    return torch.cat(parts, -1)


# ----------------------------------------------------------------------------------- converters

def _qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    _check("q", q, 2, "(..., T, m)")
    _check("k", k, 2, "(..., T, m)")
    _check("v", v, 2, "(..., T, d)")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (..., T, m), got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v must be (..., T, d) with the batch and length of q {tuple(q.shape[:-1])}, "
                         f"got {tuple(v.shape)}")


def _per_channel(t: Tensor, d: int) -> Tensor:
    """Share a (..., T, n) feature across d channels: (..., T, d, n)."""
    return t.unsqueeze(-2).expand(*t.shape[:-1], d, t.shape[-1])


def linear_attention(fq: Tensor, fk: Tensor, d: int, normalize: bool = False, eps: float = 0.0) -> DSF:
    r"""Causal linear attention on features ``fq = phi(q)``, ``fk = phi(k)`` (..., T, n) as a DSF fed with
    the values ``v`` (..., T, d): ``Lam_i = I``, ``B_i = phi(k_i)`` and ``C_i = phi(q_i) / eta_i`` on every
    channel, with ``eta_i = phi(q_i)^T sum_{j<=i} phi(k_j) + eps`` (``normalize``) or 1.

    ``Phi_ij = phi(q_i)^T phi(k_j) / eta_i``, the same for every channel (a ``(T, S)`` attention map).
    """
    _qkv(fq, fk, fk[..., :1].expand(*fk.shape[:-1], d))
    c = fq
    if normalize:
        eta = (fq * fk.cumsum(-2)).sum(-1, keepdim=True) + eps            # (..., T, 1)
        c = fq / eta
    return DSF(torch.ones_like(_per_channel(fk, d)), _per_channel(fk, d), _per_channel(c, d))


def normalized_state_attention(fq: Tensor, fk: Tensor, d: int, eps: float = 0.0) -> DSF:
    r"""Row-normalised linear attention with the normaliser in the transition: the state is
    ``S_i / eta_i``, so ``Lam_i = (eta_{i-1} / eta_i) I``, ``B_i = phi(k_i) / eta_i``, ``C_i = phi(q_i)``
    (``eta_0`` is irrelevant because ``h_0 = 0``; ``Lam_1 = 1``). A data-dependent scalar decay."""
    _qkv(fq, fk, fk[..., :1].expand(*fk.shape[:-1], d))
    eta = (fq * fk.cumsum(-2)).sum(-1, keepdim=True) + eps                # (..., T, 1)
    prev = torch.cat([eta[..., :1, :], eta[..., :-1, :]], -2)
    lam = (prev / eta).expand_as(fk)
    return DSF(_per_channel(lam, d), _per_channel(fk / eta, d), _per_channel(fq, d))


def normalized_attention(q: Tensor, k: Tensor, d: int, log_eta: Tensor) -> DSF:
    r"""The paper's normalized attention: raw ``q, k`` and a learned normaliser,
    ``y_i = q_i^T sum_{j<=i} k_j v_j^T / exp(w^T u_i)``; ``log_eta = w^T u`` (..., T)."""
    _qkv(q, k, k[..., :1].expand(*k.shape[:-1], d))
    if log_eta.shape != q.shape[:-1]:
        raise ValueError(f"log_eta must have shape (..., T) = {tuple(q.shape[:-1])}, got {tuple(log_eta.shape)}")
    c = q * torch.exp(-log_eta).unsqueeze(-1)
    return DSF(torch.ones_like(_per_channel(k, d)), _per_channel(k, d), _per_channel(c, d))


def selective_ssm(delta: Tensor, a: Tensor, b: Tensor, c: Tensor, skip: Tensor | None = None) -> DSF:
    r"""S6 (Mamba's selective SSM) in the DSF: per channel, ``Lam_i = diag(exp(-Delta_i a))``,
    ``B_i = Delta_i b_i``, ``C_i = c_i^T``, ``D = skip``.

    Args:
        delta: (..., T, d) step sizes (``softplus(W_D u + bias)`` in S6; a = 0 or delta = 1 in the checks).
        a: (d, n) non-negative decay rates (``exp(A_log)``; S6's ``A = -a``).
        b, c: (..., T, n) input and output vectors (``W_B u``, ``W_C u``), shared across channels.
        skip: (d,) or (..., T, d) the ``D`` term.
    """
    _check("delta", delta, 2, "(..., T, d)")
    _check("b", b, 2, "(..., T, n)")
    if a.dim() != 2 or a.shape[0] != delta.shape[-1]:
        raise ValueError(f"a must have shape (d={delta.shape[-1]}, n), got {tuple(a.shape)}")
    if b.shape != c.shape or b.shape[:-1] != delta.shape[:-1] or b.shape[-1] != a.shape[1]:
        raise ValueError(f"b and c must be (..., T, n={a.shape[1]}) with the length of delta {tuple(delta.shape)}; "
                         f"got b {tuple(b.shape)}, c {tuple(c.shape)}")
    d = delta.shape[-1]
    lam = torch.exp(-delta.unsqueeze(-1) * a)                             # (..., T, d, n)
    bb = delta.unsqueeze(-1) * _per_channel(b, d)
    dd = None if skip is None else skip.expand_as(delta)
    return DSF(lam, bb, _per_channel(c, d), dd)


def qlstm(forget_logits: Tensor, input_gate: Tensor, output_gate: Tensor, w: Tensor,
          exponent: Tensor | None = None) -> DSF:
    r"""The quasi-LSTM (gates from the current input only) in the DSF, ``n = 1``:
    ``Lam_i = diag(f_i)``, ``B_i = diag(i_i) W``, ``C_i = diag(o_i)``.

    ``exponent is None``: the plain forget gate ``f_i = sigmoid(W_f u_i)``. Otherwise the paper's
    reversed-sigmoid gate ``f_i = sigmoid(-W_f u_i)^a`` with ``a = exponent`` (d,) >= 0, which equals the S6
    transition ``exp(-softplus(W_f u_i) a)`` (computed that way, stably).

    Args: forget_logits ``W_f u`` (..., T, d); input_gate, output_gate (..., T, d) in (0, 1); w (d, d_in).
    """
    _check("forget_logits", forget_logits, 2, "(..., T, d)")
    for name, t in (("input_gate", input_gate), ("output_gate", output_gate)):
        if t.shape != forget_logits.shape:
            raise ValueError(f"{name} must have shape {tuple(forget_logits.shape)}, got {tuple(t.shape)}")
    if exponent is None:
        f = torch.sigmoid(forget_logits)
    else:
        if exponent.shape != forget_logits.shape[-1:]:
            raise ValueError(f"exponent must have shape ({forget_logits.shape[-1]},), got {tuple(exponent.shape)}")
        f = torch.exp(-F.softplus(forget_logits) * exponent)
    return DSF(f.unsqueeze(-1), input_gate.unsqueeze(-1), output_gate.unsqueeze(-1), w_in=w)


def softmax_phi(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    """Causal softmax attention map ``softmax_j(q_i . k_j * scale)`` over ``j <= i``: (..., T, S) — the
    infinite-state member of the family (its ``Phi_ij`` is this weight times ``I_d``)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    t = q.shape[-2]
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    return torch.softmax(s.masked_fill(~causal, float("-inf")), -1)
