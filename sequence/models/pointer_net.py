r"""Pointer Networks (Vinyals, Fortunato and Jaitly, NeurIPS 2015, https://arxiv.org/abs/1506.03134).

.. math:: u^i_j = v^\top \tanh(W_1 e_j + W_2 d_i),\quad j \in \{0, \dots, n\};\qquad
          p(C_i = j \mid C_{<i}, P) = \mathrm{softmax}_j(u^i)

As a typed graph: ``point`` nodes (the stop vector ``e_0`` and the encoder states ``e_1..e_n``) send to
``step`` nodes (decoder states ``d_i``) over a complete bipartite edge set scored by the core's
:class:`~graphattn.attention.AdditiveScore`; the normalised weights are the prediction (no message).

Letters: B batch, N input points, T decoding steps, H hidden size, D point dimension.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from graphattn.attention import AdditiveScore
from graphattn.registry import register_model

from ..base import PointerModel, valid_positions
from ..data.base import PAD, STOP, SequenceData
from ..masks import step_mask

__all__ = ["PointerNet", "PointerAttention"]


class PointerAttention(nn.Module):
    """The pointer score ``u_ij = v^T tanh(W1 e_j + W2 d_i)`` as a one-head :class:`AdditiveScore` without bias.

    The adapter splits the score's two projections so that decoding projects the encoder states once:
    ``keys(e) = W1 e`` (the score's ``k``), ``forward(d, keys)`` adds ``W2 d`` (its ``q``) and reduces with ``v``.

    Shapes: keys: (B, 1 + N, H) -> (B, 1 + N, H); forward: d (B, T, H), keys (B, 1 + N, H) -> (B, T, 1 + N).
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.score = AdditiveScore(hidden, hidden, heads=1, head_dim=hidden, bias=False)

    def keys(self, enc: Tensor) -> Tensor:
        return self.score.k(enc)

    def forward(self, dec: Tensor, keys: Tensor) -> Tensor:
        q = self.score.q(dec)
        return self.score.dense(q[:, None], keys[:, None])[:, 0]          # (B, 1, T, 1+N) -> (B, T, 1+N)


@register_model("PointerNet", task="sequence")
class PointerNet(PointerModel):
    """Pointer Network: LSTM encoder over the embedded points, LSTM decoder fed the previously pointed
    point, additive pointer attention over ``[stop; e_1..e_n]``.

    - Point embedding: one linear map ``R^D -> R^H``, shared by encoder and decoder inputs.
    - Encoder: single-layer LSTM from a zero state over the real points (packed, so padding never enters the
      final state); a learned stop vector is encoder position 0, so pointing at 0 means "stop".
    - Decoder: single-layer LSTM starting from the encoder's final state; its first input is a learned "go"
      vector, then the embedding of the point chosen at the previous step (the target's, in training).
    - Pointer: :class:`PointerAttention`; training masks padding only, decoding also applies the
      ``decode_mask`` rule (:mod:`sequence.masks`).
    - Decoding: greedy (:meth:`decode`) or beam search (:meth:`decode_beam`, the paper's; ``beam_size`` key of
      the task). The beam keeps the ``beam_size`` prefixes of highest total log-probability (no length
      normalisation, which the paper does not mention); a finished beam keeps its score and competes with
      the unfinished ones; the best finished sequence is returned. Every beam obeys the ``decode_mask`` rule.

    Args (config keys, ``sequence/model/PointerNet.yaml``):
        hidden_size: H (256; the paper uses 256 or 512).
        init_range: every parameter uniform in ``[-init_range, init_range]`` (0.08, the paper's).

    Shapes: forward(batch) -> scores (B, T, 1 + N), mask (B, 1, 1 + N); decode -> (B, max_steps) long.
    """

    def __init__(self, config: Mapping[str, Any], data: SequenceData) -> None:
        super().__init__(config, data)
        h = int(config["hidden_size"])
        self.hidden_size, self.init_range = h, float(config["init_range"])
        self.embed = nn.Linear(self.input_dim, h)
        self.encoder = nn.LSTM(h, h, batch_first=True)
        self.decoder = nn.LSTM(h, h, batch_first=True)
        self.stop = nn.Parameter(torch.empty(h))
        self.go = nn.Parameter(torch.empty(h))
        self.pointer = PointerAttention(h)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            nn.init.uniform_(p, -self.init_range, self.init_range)

    def encode(self, points: Tensor, lengths: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``[stop; e_1..e_N]`` (B, 1 + N, H) and the encoder's final ``(h, c)``, each (1, B, H)."""
        b, n, _ = points.shape
        packed = pack_padded_sequence(self.embed(points), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        enc, _ = pad_packed_sequence(out, batch_first=True, total_length=n)  # zeros past each length
        return torch.cat([self.stop.expand(b, 1, -1), enc], dim=1), state

    def _pointed(self, points: Tensor, index: Tensor) -> Tensor:
        """Embedded points at 1-based ``index`` (B, T); 0 and -1 give a zero point (never a real input)."""
        padded = torch.cat([points.new_zeros(points.shape[0], 1, points.shape[2]), points], dim=1)   # (B, 1+N, D)
        idx = index.clamp_min(0)[..., None].expand(-1, -1, points.shape[2])
        return self.embed(padded.gather(1, idx))                                                      # (B, T, H)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        points, lengths, targets = batch["points"], batch["lengths"], batch["targets"]
        enc, state = self.encode(points, lengths)
        go = self.go.expand(points.shape[0], 1, -1)
        inputs = torch.cat([go, self._pointed(points, targets[:, :-1])], dim=1)                     # (B, T, H)
        dec, _ = self.decoder(inputs, state)
        scores = self.pointer(dec, self.pointer.keys(enc))
        return scores, valid_positions(lengths, points.shape[1])[:, None, :]

    @torch.no_grad()
    def decode(self, batch: dict[str, Tensor], max_steps: int, mask_rule: str = "none") -> Tensor:
        points, lengths = batch["points"], batch["lengths"]
        b = points.shape[0]
        enc, state = self.encode(points, lengths)
        keys = self.pointer.keys(enc)
        mask = step_mask(mask_rule, valid_positions(lengths, points.shape[1]))
        out = torch.full((b, max_steps), PAD, dtype=torch.long, device=points.device)
        done = torch.zeros(b, dtype=torch.bool, device=points.device)
        x = self.go.expand(b, 1, -1)
        for t in range(max_steps):
            dec, state = self.decoder(x, state)
            scores = self.pointer(dec, keys)[:, 0]                                                    # (B, 1+N)
            choice = scores.masked_fill(~mask.allowed(), float("-inf")).argmax(-1)
            out[:, t] = torch.where(done, PAD, choice)
            mask.update(choice)
            done |= choice == STOP
            if bool(done.all()):
                break
            x = self._pointed(points, choice[:, None])
        return out

    @torch.no_grad()
    def decode_beam(self, batch: dict[str, Tensor], max_steps: int, mask_rule: str = "none",
                    beam_size: int = 1) -> Tensor:
        """Beam search with ``beam_size`` (K) beams per instance; all B * K beams run as one batch.

        Shapes: -> (B, max_steps) long, like :meth:`decode`.
        """
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size: expected an int >= 1, got {beam_size!r}")
        points, lengths = batch["points"], batch["lengths"]
        b, n, k = points.shape[0], points.shape[1], beam_size
        enc, (h, c) = self.encode(points, lengths)
        keys = self.pointer.keys(enc).repeat_interleave(k, 0)                                       # (BK, 1+N, H)
        state = (h.repeat_interleave(k, 1), c.repeat_interleave(k, 1))
        points = points.repeat_interleave(k, 0)
        mask = step_mask(mask_rule, valid_positions(lengths, n).repeat_interleave(k, 0))
        out = torch.full((b * k, max_steps), PAD, dtype=torch.long, device=points.device)
        done = torch.zeros(b * k, dtype=torch.bool, device=points.device)
        score = torch.full((b, k), float("-inf"), device=points.device)
        score[:, 0] = 0.0                                     # one live beam per instance at the start
        finished = torch.full((n + 1,), float("-inf"), device=points.device)
        finished[STOP] = 0.0                                  # a finished beam's only (free) continuation
        offset = torch.arange(b, device=points.device)[:, None] * k
        x = self.go.expand(b * k, 1, -1)
        for t in range(max_steps):
            dec, state = self.decoder(x, state)
            scores = self.pointer(dec, keys)[:, 0].masked_fill(~mask.allowed(), float("-inf"))     # (BK, 1+N)
            log_p = torch.where(done[:, None], finished, F.log_softmax(scores, dim=-1))
            total = (score.reshape(-1, 1) + log_p).reshape(b, k * (n + 1))
            score, flat = total.topk(k, dim=-1)                                                      # (B, K)
            parent = (flat // (n + 1) + offset).reshape(-1)                                          # (BK,)
            choice = (flat % (n + 1)).reshape(-1)
            out, done, state = out[parent], done[parent], (state[0][:, parent], state[1][:, parent])
            mask.select(parent)
            out[:, t] = torch.where(done, PAD, choice)
            mask.update(choice)
            done = done | (choice == STOP)
            if bool(done.all()):
                break
            x = self._pointed(points, choice[:, None])
        best = score.argmax(-1) + offset[:, 0]                # topk sorts, so this is beam 0 of each instance
        return out[best]
