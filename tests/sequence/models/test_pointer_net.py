import pytest
import torch
import torch.nn.functional as F

from graphattn.attention import masked_softmax
from sequence.base import valid_positions
from sequence.data import PAD, STOP
from sequence.models.pointer_net import PointerAttention, PointerNet


def test_pointer_scores_equal_the_formula_loop():
    h = 3
    att = PointerAttention(h).double()
    dec, enc = torch.randn(2, 4, h, dtype=torch.double), torch.randn(2, 5, h, dtype=torch.double)
    scores = att(dec, att.keys(enc))
    assert scores.shape == (2, 4, 5)
    W1, W2, v = att.score.k.weight, att.score.q.weight, att.score.v[0]   # W1 on encoder states, W2 on decoder states
    assert att.score.q.bias is None and att.score.k.bias is None
    for b in range(2):
        for i in range(4):
            for j in range(5):
                u = v @ torch.tanh(W1 @ enc[b, j] + W2 @ dec[b, i])
                torch.testing.assert_close(scores[b, i, j], u)


def _batch(split, idx):
    return split.batch(torch.as_tensor(idx))


def test_masked_positions_get_zero_probability(config, hull_data):
    model = PointerNet(config, hull_data)
    batch = _batch(hull_data.train, range(8))
    scores, mask = model(batch)
    n = batch["points"].shape[1]
    assert mask.shape == (8, 1, n + 1)
    assert (batch["lengths"] < n).any()  # the batch has padding to mask
    probs = masked_softmax(scores, mask, dim=-1)
    expected = valid_positions(batch["lengths"], n)[:, None, :].expand_as(probs)
    assert (probs[~expected] == 0).all() and (probs[expected] > 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))


def test_teacher_forced_loss_is_the_sum_of_per_step_cross_entropies(config, hull_data):
    model = PointerNet(config, hull_data)
    batch = _batch(hull_data.train, range(6))
    loss, parts = model.loss(batch)
    scores, _ = model(batch)
    total = 0.0
    for b in range(6):
        n = int(batch["lengths"][b])
        for t, target in enumerate(batch["targets"][b].tolist()):
            if target == PAD:
                break
            total = total + F.cross_entropy(scores[b, t, :n + 1][None], torch.tensor([target]))   # stop + n points
    torch.testing.assert_close(loss, total / 6)
    assert 0 <= parts["step_accuracy"] <= 1 and parts["step_nll"] > 0


def test_padding_does_not_change_an_instance(config, hull_data):
    model = PointerNet(config, hull_data)
    split = hull_data.train
    i = int(torch.argmin(split.lengths))
    together = _batch(split, [i, int(torch.argmax(split.lengths))])
    alone = _batch(split, [i])
    s_together, _ = model(together)
    s_alone, _ = model(alone)
    n, t = alone["points"].shape[1], alone["targets"].shape[1]
    torch.testing.assert_close(s_together[:1, :t, :n + 1], s_alone)
    torch.testing.assert_close(model.decode(together, 9)[:1], model.decode(alone, 9))


def test_teacher_forcing_on_its_own_output_reproduces_greedy_decoding(config, hull_data):
    # feeding the decoder its own greedy choices must give the same step scores as decoding step by step
    model = PointerNet(config, hull_data)
    batch = _batch(hull_data.test, range(8))
    out = model.decode(batch, 9, "none")
    steps = int((out != PAD).sum(1).max())
    targets = out[:, :steps]
    scores, mask = model({**batch, "targets": targets})
    greedy = scores.masked_fill(~mask, float("-inf")).argmax(-1)
    real = targets != PAD
    assert torch.equal(greedy[real], targets[real])


def test_polygon_decoding_gives_closed_polygons(config, hull_data):
    model = PointerNet(config, hull_data)
    batch = _batch(hull_data.test, range(16))
    out = model.decode(batch, int(batch["points"].shape[1]) + 2, "polygon")
    for row, n in zip(out.tolist(), batch["lengths"].tolist()):
        row = [v for v in row if v != PAD]
        assert row[-1] == STOP and row[-2] == row[0]
        body = row[:-2]
        assert len(body) >= 3 and len(set(body)) == len(body) and all(1 <= v <= n for v in body)


def test_a_few_steps_lower_the_loss(hull_data):
    from graphattn.config import Config

    from ..conftest import TINY

    model = PointerNet(Config("PointerNet", "convex-hull", config_dict={**TINY, "hidden_size": 16}), hull_data)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    batch = _batch(hull_data.train, range(32))
    first = model.loss(batch)[0].item()
    for _ in range(30):
        opt.zero_grad()
        model.loss(batch)[0].backward()
        opt.step()
    assert model.loss(batch)[0].item() < 0.8 * first


def _masked_log_prob(model, batch, sequences, rule):
    """log p of each row of ``sequences`` (B, T) under teacher forcing, each step normalised over the positions
    the ``rule`` mask allows (what beam search maximises); a reference independent of decode_beam."""
    from sequence.masks import step_mask

    scores, _ = model({**batch, "targets": sequences})
    mask = step_mask(rule, valid_positions(batch["lengths"], batch["points"].shape[1]))
    total = torch.zeros(len(sequences), dtype=scores.dtype)
    for t in range(sequences.shape[1]):
        log_p = F.log_softmax(scores[:, t].masked_fill(~mask.allowed(), float("-inf")), -1)
        total += log_p.gather(1, sequences[:, t:t + 1])[:, 0]
        mask.update(sequences[:, t])
    return total


def test_beam_of_one_equals_greedy(config, hull_data):
    model = PointerNet(config, hull_data)
    batch = _batch(hull_data.test, range(16))
    steps = int(batch["points"].shape[1]) + 2
    for rule in ("none", "polygon", "tour"):
        assert torch.equal(model.decode_beam(batch, steps, rule, 1), model.decode(batch, steps, rule))


def test_exhaustive_beam_finds_the_most_likely_tour(config):
    import itertools

    from ..conftest import tiny_hull_data

    data = tiny_hull_data(size=6, n_min=4, n_max=4)
    model = PointerNet(config, data)
    batch = _batch(data.test, range(6))
    found = model.decode_beam(batch, 6, "tour", beam_size=24)        # 4! tours: the beam never drops one
    tours = torch.tensor([[*p, p[0], STOP] for p in itertools.permutations(range(1, 5))])
    for i in range(6):
        one = _batch(data.test, [i] * len(tours))
        log_p = _masked_log_prob(model, one, tours, "tour")
        assert torch.equal(found[i], tours[int(log_p.argmax())])
    greedy = model.decode(batch, 6, "tour")
    narrow = model.decode_beam(batch, 6, "tour", beam_size=3)
    assert (_masked_log_prob(model, batch, found, "tour") >= _masked_log_prob(model, batch, narrow, "tour") - 1e-6).all()
    assert (_masked_log_prob(model, batch, found, "tour") >= _masked_log_prob(model, batch, greedy, "tour") - 1e-6).all()


def test_beam_search_keeps_instances_apart_and_obeys_the_mask(config, hull_data):
    model = PointerNet(config, hull_data)
    split = hull_data.test
    together = _batch(split, range(8))
    out = model.decode_beam(together, 9, "polygon", beam_size=4)
    for i in (0, 5):
        assert torch.equal(out[i:i + 1], model.decode_beam(_batch(split, [i]), 9, "polygon", beam_size=4))
    for row, n in zip(out.tolist(), together["lengths"].tolist()):
        row = [v for v in row if v != PAD]
        assert row[-1] == STOP and row[-2] == row[0] and len(set(row[:-2])) == len(row) - 2 >= 3
    with pytest.raises(ValueError, match="beam_size: expected an int >= 1, got 0"):
        model.decode_beam(together, 9, "polygon", beam_size=0)


def test_loss_with_a_training_mask_normalises_over_the_allowed_positions(config, hull_data):
    model = PointerNet(config, hull_data)
    batch = _batch(hull_data.train, [0])
    target = batch["targets"][0].tolist()
    scores, _ = model(batch)
    allowed, visited, total = set(range(1, int(batch["lengths"][0]) + 1)), [], 0.0
    for t, choice in enumerate(target):                         # the polygon rule by hand
        if t < 3:
            ok = allowed - set(visited)
        elif visited[0] == visited[-1] and t > 1:
            ok = {STOP}
        else:
            ok = (allowed - set(visited)) | {visited[0]}
        ok = sorted(ok)
        total = total - F.log_softmax(scores[0, t, ok], -1)[ok.index(choice)]
        visited.append(choice)
    loss, _ = model.loss(batch, "polygon")
    torch.testing.assert_close(loss, total)
    assert loss < model.loss(batch)[0]                          # fewer competitors, higher likelihood
