"""Graph operations shared by every attention layer.

Conventions used throughout graphattn:

* ``edge_index`` is a ``(2, E)`` long tensor ``[src; dst]``; an edge ``j -> i`` carries a message from
  ``j`` (source) to ``i`` (destination), as in PyTorch Geometric.
* A boolean attention ``mask[..., i, j]`` is ``True`` when query ``i`` may attend to key ``j``, i.e. when
  the edge ``j -> i`` exists (the convention of ``torch.nn.functional.scaled_dot_product_attention``).
* Segment operations take ``src`` of shape ``(E, *)`` and an ``index`` of shape ``(E,)`` naming the
  segment of each row; empty segments give zeros (never NaN or -inf).
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "segment_sum", "segment_mean", "segment_max", "segment_softmax", "edge_softmax",
    "mask_to_edge_index", "edge_index_to_mask", "dense_to_flat", "flat_to_dense",
    "complete_mask", "causal_mask", "neighborhood_mask", "neighborhood_indices", "FixedAdjacency", "receptive_fields",
    "dropout", "typed_linear",
]


def _check_index(index: Tensor, n_rows: int, num_segments: int) -> None:
    if index.dim() != 1 or index.numel() != n_rows:
        raise ValueError(f"index must be 1-D with one entry per row of src ({n_rows}), got shape {tuple(index.shape)}")


def segment_sum(src: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Sum the rows of ``src`` that share a segment id. Shapes: src (E, *), index (E,) -> (num_segments, *)."""
    _check_index(index, src.shape[0], num_segments)
    out = src.new_zeros((num_segments,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def segment_mean(src: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Mean of the rows of each segment; empty segments give zeros."""
    total = segment_sum(src, index, num_segments)
    count = torch.bincount(index, minlength=num_segments).clamp_min(1).to(src.dtype)
    return total / count.view((-1,) + (1,) * (src.dim() - 1))


def segment_max(src: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Element-wise maximum over each segment; empty segments give zeros."""
    _check_index(index, src.shape[0], num_segments)
    shape = (num_segments,) + tuple(src.shape[1:])
    expanded = index.view((-1,) + (1,) * (src.dim() - 1)).expand_as(src)
    out = src.new_full(shape, float("-inf")).scatter_reduce(0, expanded, src, reduce="amax", include_self=True)
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


def segment_softmax(src: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Softmax of ``src`` within each segment (rows sharing an ``index``).

    Stable for large scores (the segment maximum is subtracted first); a row scored ``-inf`` gets weight 0,
    and a segment whose rows are all ``-inf`` gets all-zero weights rather than NaN.
    Shapes: src (E, *), index (E,) -> (E, *).
    """
    with torch.no_grad():
        shift = segment_max(src, index, num_segments)
    z = (src - shift.index_select(0, index)).exp()
    denom = segment_sum(z, index, num_segments).index_select(0, index)
    return z / denom.clamp_min(torch.finfo(z.dtype).tiny)


def edge_softmax(scores: Tensor, edge_index: Tensor, num_nodes: int | None = None, by: str = "dst") -> Tensor:
    """Softmax of per-edge scores over the edges that compete for one node.

    ``by="dst"`` normalises over each node's incoming edges (usual attention: a receiver distributes its
    attention over its senders); ``by="src"`` over each node's outgoing edges (reversed attention: a sender
    distributes its message over its receivers, as in DependencyViT).

    Shapes: scores (E,) or (E, H), edge_index (2, E) -> (E,) or (E, H).
    """
    if by not in ("dst", "src"):
        raise ValueError(f"by must be 'dst' or 'src', got {by!r}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    index = edge_index[1] if by == "dst" else edge_index[0]
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    return segment_softmax(scores, index, num_nodes)


# --------------------------------------------------------------------------------------------- dense <-> sparse

def mask_to_edge_index(mask: Tensor) -> Tensor:
    """Edges of a boolean attention mask.

    ``mask`` is ``(Nq, Nk)`` or ``(B, Nq, Nk)``; ``mask[b, i, j]`` becomes the edge ``b*Nk + j -> b*Nq + i``
    so that a batch of token graphs becomes one disjoint graph over the flattened tokens.
    """
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    if mask.dim() != 3:
        raise ValueError(f"mask must be (Nq, Nk) or (B, Nq, Nk), got shape {tuple(mask.shape)}")
    _, nq, nk = mask.shape
    b, i, j = mask.nonzero(as_tuple=True)
    return torch.stack([b * nk + j, b * nq + i])


def edge_index_to_mask(edge_index: Tensor, num_dst: int, num_src: int | None = None) -> Tensor:
    """Boolean ``(num_dst, num_src)`` mask with ``mask[i, j] = True`` for each edge ``j -> i``."""
    num_src = num_dst if num_src is None else num_src
    mask = torch.zeros(num_dst, num_src, dtype=torch.bool, device=edge_index.device)
    mask[edge_index[1], edge_index[0]] = True
    return mask


def dense_to_flat(x: Tensor, token_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(B, N, D)`` tokens (+ ``(B, N)`` validity mask) -> ``(M, D)`` valid tokens and their batch ids."""
    b, n = x.shape[:2]
    batch = torch.arange(b, device=x.device).repeat_interleave(n)
    flat = x.reshape(b * n, *x.shape[2:])
    if token_mask is None:
        return flat, batch
    keep = token_mask.reshape(-1)
    return flat[keep], batch[keep]


def flat_to_dense(x: Tensor, batch: Tensor, batch_size: int | None = None,
                  max_tokens: int | None = None) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`dense_to_flat`: ``(M, D)`` + batch ids (sorted) -> ``(B, N, D)`` and ``(B, N)`` mask."""
    if batch.numel() and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (tokens of one graph contiguous)")
    b = int(batch.max()) + 1 if batch_size is None and batch.numel() else (batch_size or 0)
    counts = torch.bincount(batch, minlength=b)
    n = int(counts.max()) if max_tokens is None and counts.numel() else (max_tokens or 0)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(batch.numel(), device=x.device) - start[batch]
    out = x.new_zeros((b, n) + tuple(x.shape[1:]))
    mask = torch.zeros(b, n, dtype=torch.bool, device=x.device)
    out[batch, pos] = x
    mask[batch, pos] = True
    return out, mask


# --------------------------------------------------------------------------------------------- mask builders

def complete_mask(n_query: int, n_key: int | None = None, self_loops: bool = True) -> Tensor:
    """Every query attends to every key (optionally not to itself when square)."""
    n_key = n_query if n_key is None else n_key
    mask = torch.ones(n_query, n_key, dtype=torch.bool)
    if not self_loops:
        mask.fill_diagonal_(False)
    return mask


def causal_mask(n: int) -> Tensor:
    """Query ``i`` attends to keys ``j <= i``."""
    return torch.ones(n, n, dtype=torch.bool).tril()


def _as_tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"{name} must be an int or have one entry per grid axis ({ndim}), got {value}")
    return value


def _axis_mask(length: int, k: int, s: int, d: int, causal: bool) -> Tensor:
    """Generalized Neighborhood Attention rule for one axis: ``(L, L)`` mask[query, key].

    Rules (NATTEN's Flex mask, see ``shared/papers/gna.md``): positions only meet within one dilation group
    (same residue mod d); queries of a stride group share a leader (the centre for non-causal windows, the
    last query for causal ones); a non-causal window of k keys is centred on the leader and shifted inward at
    the borders; a causal window holds keys j <= i with leader - j < k.
    """
    if not (1 <= k and 1 <= s <= k and d >= 1):
        raise ValueError(f"need kernel_size >= 1, 1 <= stride <= kernel_size, dilation >= 1; got k={k}, s={s}, d={d}")
    if k * d > length:
        raise ValueError(f"kernel_size * dilation ({k}*{d}) must not exceed the axis length {length}")
    pos = torch.arange(length)
    residue, g = pos % d, pos // d                       # group id and coordinate inside the dilation group
    group_len = (length - residue + d - 1) // d          # length of each position's dilation group
    if causal:
        leader = torch.minimum((g // s) * s + s - 1, group_len - 1)
    else:
        leader = torch.minimum((g // s) * s + s // 2, group_len - 1)
    same_group = residue[:, None] == residue[None, :]
    gi, gj = g[:, None], g[None, :]
    if causal:
        inside = (gj <= gi) & (leader[:, None] - gj < k)
    else:
        left, right = k // 2, k // 2 + k % 2 - 1
        centre = torch.maximum(torch.minimum(leader, group_len - 1 - right), torch.full_like(leader, left))
        inside = (gj >= (centre - left)[:, None]) & (gj <= (centre + right)[:, None])
    return same_group & inside


def neighborhood_mask(shape: int | Sequence[int], kernel_size: int | Sequence[int],
                      stride: int | Sequence[int] = 1, dilation: int | Sequence[int] = 1,
                      causal: bool | Sequence[bool] = False) -> Tensor:
    """Boolean ``(N, N)`` mask of Generalized Neighborhood Attention on a 1-D, 2-D or 3-D grid.

    Tokens are flattened row-major (last axis fastest). The neighbourhood is the Cartesian product of the
    per-axis neighbourhoods, so a non-causal query sees exactly ``prod(kernel_size)`` keys. ``stride = 1,
    dilation = 1`` is classic neighbourhood attention, ``stride = kernel_size`` is blocked (Swin-style)
    window attention and ``kernel_size = shape`` is full attention.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(int(v) for v in shape)
    if not 1 <= len(shape) <= 3:
        raise ValueError(f"grids of 1 to 3 axes are supported, got shape {shape}")
    nd = len(shape)
    ks, ss, ds = (_as_tuple(v, nd, n) for v, n in ((kernel_size, "kernel_size"), (stride, "stride"),
                                                     (dilation, "dilation")))
    cs = (causal,) * nd if isinstance(causal, bool) else tuple(bool(c) for c in causal)
    mask = torch.ones(1, 1, dtype=torch.bool)
    for length, k, s, d, c in zip(shape, ks, ss, ds, cs):
        axis = _axis_mask(length, k, s, d, c)
        # product of axes: mask[(a, b), (a', b')] = mask_a[a, a'] & mask_b[b, b']
        mask = (mask[:, None, :, None] & axis[None, :, None, :]).reshape(mask.shape[0] * length, -1)
    return mask


def neighborhood_indices(shape: int | Sequence[int], kernel_size: int | Sequence[int],
                         stride: int | Sequence[int] = 1, dilation: int | Sequence[int] = 1,
                         causal: bool | Sequence[bool] = False) -> tuple[Tensor, Tensor]:
    """Key indices of each query's neighbourhood for the gather fast path.

    Returns ``(index, valid)`` of shape ``(N, K)`` with ``K = prod(kernel_size)``: ``index[i]`` lists the keys
    of query ``i`` (padded with 0 where ``valid`` is False, which only happens for causal windows).
    """
    mask = neighborhood_mask(shape, kernel_size, stride, dilation, causal)
    nd = 1 if isinstance(shape, int) else len(tuple(shape))
    k_total = math.prod(_as_tuple(kernel_size, nd, "kernel_size"))
    counts = mask.sum(1)
    # stable sort puts the True key positions first, in increasing key order
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :k_total]
    valid = torch.arange(k_total)[None, :] < counts[:, None]
    return torch.where(valid, order, torch.zeros_like(order)), valid


def grid_coordinates(shape: Sequence[int]) -> Tensor:
    """``(N, ndim)`` integer coordinates of a row-major grid (helper for positional features)."""
    return torch.tensor(list(itertools.product(*(range(s) for s in shape))), dtype=torch.long)


# --------------------------------------------------------------------------------------------- fixed weights

def _csr(rows: Tensor, cols: Tensor, values: Tensor, n_rows: int, n_cols: int) -> Tensor:
    """CSR matrix from unsorted triplets (duplicates are kept and summed by products), without coalescing."""
    order = torch.argsort(rows * n_cols + cols)
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols[order], values[order], (n_rows, n_cols), check_invariants=False)


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix: Tensor, matrix_t: Tensor, x: Tensor) -> Tensor:
        ctx.matrix_t, ctx.dtype = matrix_t, x.dtype
        with torch.autocast(x.device.type, enabled=False):  # sparse products run in the matrix's dtype
            return torch.sparse.mm(matrix, x.to(matrix.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor):
        with torch.autocast(grad.device.type, enabled=False):
            return None, None, torch.sparse.mm(ctx.matrix_t, grad.to(ctx.matrix_t.dtype)).to(ctx.dtype)


class FixedAdjacency:
    """Attention weights frozen into a sparse ``(num_dst, num_src)`` matrix for repeated propagation.

    ``propagate(x)`` computes ``sum_j w_ij x_j`` for every receiver ``i`` as a CSR sparse-dense product; the
    backward pass uses a CSR transpose built once, so propagating many times (KGAT reuses one attention matrix
    for every CF batch of an epoch) costs two sparse products per call and no per-edge tensors. The weights
    themselves get no gradient (they are constants, as in the official KGAT code).

    Args:
        edge_index: ``(2, E)`` ``[src; dst]``.
        weights: ``(E,)`` edge weights (a single head).
    """

    def __init__(self, edge_index: Tensor, weights: Tensor, num_dst: int, num_src: int | None = None):
        num_src = num_dst if num_src is None else num_src
        w = weights.detach().reshape(-1).to(torch.float32)
        if w.numel() != edge_index.shape[1]:
            raise ValueError(f"need one weight per edge ({edge_index.shape[1]}), got {w.numel()}")
        src, dst = edge_index
        self.matrix = _csr(dst, src, w, num_dst, num_src)
        self.matrix_t = _csr(src, dst, w, num_src, num_dst)
        self.shape = (num_dst, num_src)

    def propagate(self, x: Tensor) -> Tensor:
        """``(num_src, D)`` -> ``(num_dst, D)``."""
        return _SpMM.apply(self.matrix, self.matrix_t, x)

    def to_dense(self) -> Tensor:
        return self.matrix.to_dense()

    @staticmethod
    def _rows(matrix: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(counts, cols, values)`` of the given rows of a CSR matrix, in the order given (None: all rows)."""
        crow, col, val = matrix.crow_indices(), matrix.col_indices(), matrix.values()
        if rows is None:
            return crow.diff(), col, val
        start = crow.index_select(0, rows)
        counts = crow.index_select(0, rows + 1) - start
        first = torch.cumsum(counts, 0) - counts                       # where each row starts in the output
        take = torch.repeat_interleave(start - first, counts, output_size=int(counts.sum()))
        take += torch.arange(take.numel(), device=take.device)
        return counts, col.index_select(0, take), val.index_select(0, take)

    def in_neighbors(self, rows: Tensor) -> Tensor:
        """Sorted unique ``rows`` together with every source that sends to one of them."""
        _, cols, _ = self._rows(self.matrix, rows)
        keep = torch.zeros(self.shape[1], dtype=torch.bool, device=rows.device)
        keep[cols] = True
        keep[rows] = True
        return keep.nonzero().flatten()

    def restrict(self, rows: Tensor, cols: Tensor | None = None) -> FixedAdjacency:
        """The sub-matrix of ``rows`` (unique) whose columns are re-indexed to positions in ``cols``.

        ``cols`` (unique) must contain every in-neighbour of ``rows`` (e.g. :meth:`in_neighbors`); ``None`` keeps
        the global columns. ``restrict(rows, cols).propagate(x[cols])`` equals ``propagate(x)[rows]`` at the cost
        of the selected rows only (mini-batch propagation). Both the matrix and its transpose are sliced out of
        the cached ones, or the slice is transposed by one sort when it holds few entries.
        """
        out = FixedAdjacency.__new__(FixedAdjacency)
        n_rows = rows.numel()
        n_cols = self.shape[1] if cols is None else cols.numel()
        col_pos = None if cols is None else _positions(cols, self.shape[1])
        counts, col, val = self._rows(self.matrix, rows)
        if col_pos is not None:
            col = col_pos[col]
            if col.numel() and bool((col < 0).any()):
                raise ValueError("cols must contain every in-neighbour of rows")
        if 2 * col.numel() <= (self.matrix.values().numel() if cols is None else
                               int((self.matrix_t.crow_indices().diff().index_select(0, cols)).sum())):
            # few entries: transpose the slice itself (one sort of the slice)
            dst = torch.repeat_interleave(torch.arange(n_rows, device=rows.device), counts, output_size=col.numel())
            matrix_t = _csr(col, dst, val, n_cols, n_rows)
        else:
            # most of the columns' entries are kept: slice the cached transpose and drop receivers not in rows
            counts_t, dst, val_t = self._rows(self.matrix_t, cols)
            dst = _positions(rows, self.shape[0])[dst]
            keep = dst >= 0
            owner = torch.repeat_interleave(torch.arange(n_cols, device=rows.device), counts_t, output_size=dst.numel())
            counts_t = torch.bincount(owner[keep], minlength=n_cols)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                matrix_t = torch.sparse_csr_tensor(_crow(counts_t), dst[keep], val_t[keep], (n_cols, n_rows),
                                                   check_invariants=False)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are stable
            warnings.simplefilter("ignore", UserWarning)
            out.matrix = torch.sparse_csr_tensor(_crow(counts), col, val, (n_rows, n_cols), check_invariants=False)
        out.matrix_t = matrix_t
        out.shape = (n_rows, n_cols)
        return out


def _positions(nodes: Tensor, n: int) -> Tensor:
    """``pos[nodes[k]] = k``, -1 elsewhere."""
    pos = torch.full((n,), -1, dtype=torch.long, device=nodes.device)
    pos[nodes] = torch.arange(nodes.numel(), device=nodes.device)
    return pos


def _crow(counts: Tensor) -> Tensor:
    crow = torch.zeros(counts.numel() + 1, dtype=torch.long, device=counts.device)
    torch.cumsum(counts, 0, out=crow[1:])
    return crow


def receptive_fields(adjacency: FixedAdjacency, nodes: Tensor, hops: int, max_size: int | None = None) -> list[Tensor]:
    """The nodes each layer of a propagation must compute so that ``nodes`` get exact outputs.

    Returns ``[S_{L-k}, ..., S_L]`` (sorted, unique; ``k <= hops``): ``S_L`` is ``nodes`` and ``S_{l-1}`` is ``S_l``
    plus the in-neighbours of ``S_l``, so layer ``l`` needs rows ``S_l`` only, from inputs on ``S_{l-1}``. With
    ``max_size``, fields larger than that are left out and not expanded further (the layers they belong to are
    better run on the whole graph); the list is then shorter, possibly empty.
    """
    keep = torch.zeros(adjacency.shape[0], dtype=torch.bool, device=nodes.device)
    keep[nodes] = True
    fields = [keep.nonzero().flatten()]
    if max_size is not None and fields[0].numel() > max_size:
        return []
    for _ in range(hops):
        nxt = adjacency.in_neighbors(fields[-1])
        if max_size is not None and nxt.numel() > max_size:
            break
        fields.append(nxt)
    return fields[::-1]


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout, as ``F.dropout``, drawing 15 random bits per element instead of a float.

    ``torch.Tensor.random_`` on int64 fills 63 uniform bits per draw; read as four 16-bit words with the sign bit
    cleared, one draw masks four elements, which makes the mask about 3x cheaper than the ``bernoulli_`` or
    ``rand`` of ``F.dropout`` on CPU (it dominates full-graph propagation on large node tables). ``p`` is
    rounded to a multiple of 2^-15 (0.1 becomes 0.100006).
    """
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if p == 1.0:
        return x * 0.0
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_().view(torch.int16)[:n]
    keep = words.view(x.shape).bitwise_and_(0x7FFF) >= round(p * 32768)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def typed_linear(x: Tensor, types: Tensor, weight: Tensor) -> Tensor:
    """``out[i] = weight[types[i]] @ x[i]``: a linear map chosen per row by its type (relation projections).

    Rows are sorted by type once and each type's contiguous block is one matrix product, so the cost is that
    of ``len(x)`` dense rows plus two gathers, not a batched matrix-vector product over gathered ``(B, k, d)``
    weights (slow on CPU, and it materialises B copies of the weights).

    Shapes: x (B, d), types (B,), weight (T, k, d) -> (B, k).
    """
    if x.shape[0] != types.shape[0]:
        raise ValueError(f"one type per row needed: x has {x.shape[0]} rows, types {types.shape[0]}")
    order = torch.argsort(types, stable=True)
    counts = torch.bincount(types, minlength=weight.shape[0]).tolist()
    blocks = torch.split(x.index_select(0, order), counts)
    per_type = weight.unbind(0)  # one view per type: backward stacks one gradient instead of zero-filling T
    out = torch.cat([blk @ per_type[t].T for t, blk in enumerate(blocks) if blk.shape[0]])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return out.index_select(0, inverse)
