"""The DSF checks (a)-(e) of the spec, in float64, against hand-written references."""
import math

import pytest
import torch
import torch.nn.functional as F

from graphattn.attention import (DotProductScore, GraphAttention, KernelNormalizer, KernelScore, NoNorm,
                                 ValueMessage, elu_feature_map)
from sequence.dsf.system import (DSF, feature_map, linear_attention, normalized_attention,
                                 normalized_state_attention, qlstm, random_features, selective_ssm,
                                 softmax_phi, taylor_features)

T, D, N = 32, 8, 16
f64 = torch.float64


def _qkv(seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(*batch, T, D, generator=g, dtype=f64)
    wq, wk, wv = (torch.randn(D, N if i < 2 else D, generator=g, dtype=f64) / math.sqrt(D) for i in range(3))
    return u, u @ wq, u @ wk, u @ wv


def _loop_linear_attention(fq, fk, v, normalize):
    """Textbook causal linear attention: a loop over i of sums over j <= i."""
    out = torch.zeros_like(v)
    for i in range(fq.shape[0]):
        w = fk[: i + 1] @ fq[i]                                           # (i+1,)
        out[i] = (w[:, None] * v[: i + 1]).sum(0) / (w.sum() if normalize else 1.0)
    return out


@pytest.mark.parametrize("normalize", [False, True])
def test_a_linear_attention_parallel_equals_recurrent(normalize):
    _, q, k, v = _qkv()
    fq, fk = elu_feature_map(q), elu_feature_map(k)
    system = linear_attention(fq, fk, D, normalize=normalize)
    assert system.state_size == N * D and bool((system.lam == 1).all())
    reference = _loop_linear_attention(fq, fk, v, normalize)
    rec, par = system.recurrent(v), system.parallel(v)
    assert (rec - par).abs().max() < 1e-10
    assert (par - reference).abs().max() < 1e-10
    phi = system.materialise_phi(flat=True)                               # (T D, T D), lower block-triangular
    assert (phi @ v.reshape(-1) - reference.reshape(-1)).abs().max() < 1e-10
    assert phi.reshape(T, D, T, D).transpose(1, 2).triu(1).abs().max() == 0


def test_a_matches_the_core_attention_layer_dense_path():
    """Linear attention through GraphAttention (KernelScore + KernelNormalizer, causal mask) is the DSF."""
    torch.manual_seed(0)
    layer = GraphAttention(D, D, 1, N, score=KernelScore(D, D, 1, N), normalizer=KernelNormalizer(0.0),
                           message=ValueMessage(D, 1, D), update="none").double()
    u = torch.randn(2, T, D, dtype=f64)
    out = layer(u, mask=torch.ones(T, T, dtype=torch.bool).tril())
    q, k = layer.score.project(u, u)
    v = layer.message.project(u)[:, :, 0]
    system = linear_attention(elu_feature_map(q[:, :, 0]), elu_feature_map(k[:, :, 0]), D, normalize=True)
    assert (system.recurrent(v) - out).abs().max() < 1e-10
    assert (system.parallel(v) - out).abs().max() < 1e-10


def test_b_s6_with_identity_transition_is_unnormalised_linear_attention():
    u, q, k, v = _qkv(1)
    fq, fk = elu_feature_map(q), elu_feature_map(k)
    ssm = selective_ssm(torch.ones(T, D, dtype=f64), torch.zeros(D, N, dtype=f64), fk, fq)  # a=0, Delta=1, D=0
    att = linear_attention(fq, fk, D, normalize=False)
    assert bool((ssm.lam == 1).all())
    assert torch.equal(ssm.materialise_phi(), att.materialise_phi())
    assert (ssm.recurrent(v) - _loop_linear_attention(fq, fk, v, False)).abs().max() < 1e-10
    # with forgetting the two differ: the data-dependent decay is what separates them
    decayed = selective_ssm(torch.ones(T, D, dtype=f64), torch.full((D, N), 0.1, dtype=f64), fk, fq)
    assert (decayed.materialise_phi() - att.materialise_phi()).abs().max() > 1e-3


def test_c_normalised_state_reproduces_normalised_linear_attention():
    _, q, k, v = _qkv(2, batch=(3,))
    fq, fk = elu_feature_map(q), elu_feature_map(k)
    state_form = normalized_state_attention(fq, fk, D)
    lam = state_form.lam[..., 0, 0]                                        # scalar decay eta_{i-1} / eta_i
    eta = (fq * fk.cumsum(-2)).sum(-1)
    assert (lam[..., 1:] - eta[..., :-1] / eta[..., 1:]).abs().max() < 1e-12
    expected = torch.stack([_loop_linear_attention(fq[b], fk[b], v[b], True) for b in range(3)])
    assert (state_form.recurrent(v) - expected).abs().max() < 1e-10
    assert (state_form.parallel(v) - expected).abs().max() < 1e-10
    assert (state_form.materialise_phi() - linear_attention(fq, fk, D, normalize=True).materialise_phi()
            ).abs().max() < 1e-10


def test_normalized_attention_equals_its_formula_and_the_core_layer():
    u, q, k, v = _qkv(3)
    log_eta = u @ torch.linspace(-1, 1, D, dtype=f64)
    system = normalized_attention(q, k, D, log_eta)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    expected = ((q @ k.T).masked_fill(~mask, 0) @ v) / log_eta.exp()[:, None]
    assert (system.recurrent(v) - expected).abs().max() < 1e-10
    assert (system.parallel(v) - expected).abs().max() < 1e-10
    from sequence.dsf.models import ExpNormalizedScore
    layer = GraphAttention(D, D, 1, N, score=ExpNormalizedScore(D, 1, N), normalizer=NoNorm(),
                           message=ValueMessage(D, 1, D), update="none").double()
    x = torch.randn(1, T, D, dtype=f64)
    _, kk = layer.score.project(x, x)
    vv = layer.message.project(x)[:, :, 0]
    ref = normalized_attention(layer.score.q(x), kk[:, :, 0], D, layer.score.log_eta(x)[..., 0]).parallel(vv)
    assert (layer(x, mask=mask) - ref).abs().max() < 1e-10


def _softmax_error(feature_fn, q, k):
    target = softmax_phi(q, k)
    scale = q.shape[-1] ** -0.25                                           # exp(q.k / sqrt(Dh))
    # one channel suffices: attention's Phi is the same on every channel
    approx = linear_attention(feature_fn(q * scale), feature_fn(k * scale), 1, normalize=True)
    phi = approx.kernel()[..., 0]                                          # (T, S)
    return float((phi - target).abs().sum(-1).mean())                      # mean row total variation x 2


def test_d_softmax_approximation_error_falls_with_state_expansion():
    g = torch.Generator().manual_seed(4)
    dh = 4
    q, k = torch.randn(T, dh, generator=g, dtype=f64) * 0.7, torch.randn(T, dh, generator=g, dtype=f64) * 0.7
    # the softmax map itself comes out of the core layer's dense path with a causal mask
    layer = GraphAttention(dh, dh, 1, dh, score=DotProductScore(dh, dh, 1, dh, bias=False),
                           normalizer="softmax", message="value", update="none").double()
    with torch.no_grad():
        layer.score.q.weight.copy_(torch.eye(dh))
        layer.score.k.weight.copy_(torch.eye(dh))
    _, w = layer(q[None], x_src=k[None], mask=torch.ones(T, T, dtype=torch.bool).tril(), return_attention=True)
    assert (w.weights[0, 0] - softmax_phi(q, k)).abs().max() < 1e-12
    # random positive features, averaged over 5 draws: error falls with n
    errors = []
    for n in (4, 16, 64, 256, 1024):
        draws = [_softmax_error(lambda x, om=torch.randn(dh, n, generator=g, dtype=f64): random_features(x, om),
                                q, k) for _ in range(5)]
        errors.append(sum(draws) / len(draws))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.3 * errors[0], errors
    # Taylor features of growing degree (n = 1, 1 + d, 1 + d + d^2, ...): error falls too
    taylor = [_softmax_error(lambda x, p=p: taylor_features(x, p), q, k) for p in (0, 1, 2, 3)]
    assert all(a > b for a, b in zip(taylor, taylor[1:])), taylor


def test_e_reversed_sigmoid_qlstm_is_the_s6_transition():
    g = torch.Generator().manual_seed(5)
    zf = torch.randn(T, D, generator=g, dtype=f64) * 2
    gates = torch.rand(2, T, D, generator=g, dtype=f64)
    a = torch.rand(D, generator=g, dtype=f64) * 3
    w = torch.randn(D, D, generator=g, dtype=f64)
    lstm = qlstm(zf, gates[0], gates[1], w, exponent=a)
    assert (lstm.lam[..., 0] - torch.sigmoid(-zf) ** a).abs().max() < 1e-12   # sigmoid(-W_f u)^a
    s6 = selective_ssm(F.softplus(zf), a[:, None], torch.ones(T, 1, dtype=f64), torch.ones(T, 1, dtype=f64))
    assert (lstm.lam - s6.lam).abs().max() < 1e-12
    # plain qLSTM: f = sigmoid(W_f u); the whole recurrence against a loop
    plain = qlstm(zf, gates[0], gates[1], w)
    x = torch.randn(T, D, generator=g, dtype=f64)
    h, ref = torch.zeros(D, dtype=f64), []
    for i in range(T):
        h = torch.sigmoid(zf[i]) * h + gates[0, i] * (w @ x[i])
        ref.append(gates[1, i] * h)
    ref = torch.stack(ref)
    assert (plain.recurrent(x) - ref).abs().max() < 1e-10
    assert (plain.parallel(x) - ref).abs().max() < 1e-10
    assert (plain.materialise_phi(flat=True) @ x.reshape(-1) - ref.reshape(-1)).abs().max() < 1e-10


def test_s6_parallel_recurrent_and_step_agree_with_skip():
    g = torch.Generator().manual_seed(6)
    delta = F.softplus(torch.randn(2, T, D, generator=g, dtype=f64))
    a = torch.rand(D, 4, generator=g, dtype=f64) * 2
    b, c = torch.randn(2, 2, T, 4, generator=g, dtype=f64)
    system = selective_ssm(delta, a, b, c, torch.randn(D, generator=g, dtype=f64))
    x = torch.randn(2, T, D, generator=g, dtype=f64)
    y = system.recurrent(x)
    assert (system.parallel(x) - y).abs().max() < 1e-10
    h = torch.zeros(2, D, 4, dtype=f64)
    for i in range(T):
        yi, h = system.step(h, x[:, i], i)
        assert (yi - y[:, i]).abs().max() < 1e-10


def test_bad_input_gives_clear_errors():
    fk = torch.rand(T, N)
    with pytest.raises(ValueError, match="same shape"):
        linear_attention(fk, torch.rand(T, N + 1), D)
    with pytest.raises(ValueError, match=r"lam, b and c must all be"):
        DSF(torch.ones(T, D, N), torch.ones(T, D, N + 1), torch.ones(T, D, N))
    system = linear_attention(fk, fk, D)
    with pytest.raises(ValueError, match=r"input must have shape \(\.\.\., T=32, d_in=8\)"):
        system.recurrent(torch.rand(T, D + 1))
    with pytest.raises(ValueError, match=r"a must have shape \(d=8, n\)"):
        selective_ssm(torch.ones(T, D), torch.zeros(D + 1, N), fk, fk)
    with pytest.raises(ValueError, match="unknown feature map 'cosh'"):
        feature_map("cosh", fk)
    with pytest.raises(ValueError, match="exponent must have shape"):
        qlstm(torch.zeros(T, D), torch.zeros(T, D), torch.zeros(T, D), torch.eye(D), exponent=torch.ones(D + 1))
    with pytest.raises(ValueError, match="has no finite-state DSF"):
        from sequence.dsf.models import AttentionMixer
        AttentionMixer("softmax", D, 4).dsf(torch.rand(1, T, D))


def test_linear_scan_gradients_match_autograd_of_the_loop():
    from sequence.dsf.system import linear_scan
    g = torch.Generator().manual_seed(7)
    lam = torch.rand(2, 6, 3, 4, generator=g, dtype=f64).requires_grad_()
    drive = torch.randn(2, 6, 3, 4, generator=g, dtype=f64).requires_grad_()
    assert torch.autograd.gradcheck(linear_scan, (lam, drive))
    h, ref = torch.zeros(2, 3, 4, dtype=f64), []
    for i in range(6):
        h = lam[:, i] * h + drive[:, i]
        ref.append(h)
    assert (linear_scan(lam, drive) - torch.stack(ref, 1)).abs().max() < 1e-12
