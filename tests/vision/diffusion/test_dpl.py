import math

import pytest
import torch

from vision.diffusion.data import DiffusionData
from graphattn.interpret import capture_attention
from vision.diffusion.dpl import (CANVAS, PLACEHOLDERS, SceneDenoiser, background_loss, balance_loss, box_masks,
                                  caption_tokens, crop, cross_maps, ddim_invert, denoise, disjoint_loss,
                                  dynamic_prompt_learning, guided_eps, inject_attention, leakage, make_scenes,
                                  locate_boxes, null_caption, scene_data, sincos_2d, thresholds)

CONFIG = {"timesteps": 50, "noise_schedule": "cosine"}


def _digits(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    y = torch.arange(n) % 10
    return DiffusionData({s: (x, y) for s in ("train", "valid", "test")}, 10, {"in_channels": 1, "image_size": 8})


def _model(seed=0, scenes=6):
    data = scene_data(_digits(), {"train": scenes, "valid": scenes, "test": scenes}, seed)
    torch.manual_seed(seed)
    return SceneDenoiser(CONFIG, data, dim=16, layers=2, heads=2), data


def _balance_reference(maps, grid, nouns, sigma=0.5):
    """Loops: softmax(100 M[1:-1]) over tokens, 3x3 Gaussian with reflect padding, 1 - max, max over nouns."""
    b, p, length = maps.shape
    h, w = grid
    k1 = [math.exp(-d * d / (2 * sigma ** 2)) for d in (-1, 0, 1)]
    k1 = [v / sum(k1) for v in k1]
    refl = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)   # noqa: E731
    out = []
    for s in range(b):
        losses = []
        for n in nouns:
            att = []
            for q in range(p):
                z = [math.exp(100 * float(maps[s, q, j])) for j in range(1, length - 1)]
                att.append(z[n - 1] / sum(z))
            best = -1.0
            for r in range(h):
                for c in range(w):
                    v = sum(k1[dr + 1] * k1[dc + 1] * att[refl(r + dr, h) * w + refl(c + dc, w)]
                            for dr in (-1, 0, 1) for dc in (-1, 0, 1))
                    best = max(best, v)
            losses.append(1 - best)
        out.append(max(losses))
    return torch.tensor(out)


def test_balance_loss_hand_computed():
    # every token equal -> softmax over the 4 inner tokens is 1/4 everywhere; smoothing keeps a constant map
    maps = torch.full((1, 6, 6), 1 / 6)
    assert torch.allclose(balance_loss(maps, (2, 3)), torch.tensor([0.75]))
    # noun 1 takes all mass at one pixel -> that pixel's smoothed value is the Gaussian's centre weight
    maps = torch.zeros(1, 9, 6)
    maps[0, 4, 1] = 1.0
    centre = (1 / (1 + 2 * math.exp(-2))) ** 2                  # sigma 0.5: weights e^{-2}, 1, e^{-2}
    loss_noun1 = 1 - (centre * 1.0 + (1 - centre) * 0.25)        # neighbours stay uniform (1/4)
    got = balance_loss(maps, (3, 3), nouns=(1,))
    assert torch.allclose(got, torch.tensor([loss_noun1]), atol=1e-6)


def test_balance_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 12, 6, generator=g).softmax(-1) * 0.1
    assert torch.allclose(balance_loss(maps, (3, 4)), _balance_reference(maps, (3, 4), PLACEHOLDERS), atol=1e-5)
    mean = balance_loss(maps, (3, 4), reduction="mean")
    assert (mean <= balance_loss(maps, (3, 4)) + 1e-7).all()
    with pytest.raises(ValueError, match="reduction"):
        balance_loss(maps, (3, 4), reduction="sum")
    with pytest.raises(ValueError, match="pixels"):
        balance_loss(maps, (3, 3))


def test_disjoint_background_and_leakage_measures():
    objects, background = box_masks(torch.tensor([[[0, 0], [4, 16]]]))           # (1, 2, 72), (1, 72)
    assert objects.sum().item() == 32 and background.sum().item() == 40
    maps = torch.zeros(1, 72, 6)
    maps[0, :, 1], maps[0, :, 3] = objects[0, 0], objects[0, 1]                   # each noun on its own box
    m = leakage(maps, objects, background)
    assert m["outside"].item() == 0 and m["background"].item() == 0 and m["overlap"].item() == 0
    assert disjoint_loss(maps).item() == 0 and background_loss(maps, background).item() == 0
    maps[0, :, 1] = maps[0, :, 3] = 1.0                                           # both uniform
    m = leakage(maps, objects, background)
    assert m["outside"].item() == pytest.approx(1 - 16 / 72)
    assert m["other"].item() == pytest.approx(16 / 72) and m["background"].item() == pytest.approx(40 / 72)
    assert m["overlap"].item() == pytest.approx(1.0)
    assert background_loss(maps, background).item() == pytest.approx(40 / math.sqrt(72 * 40))


def test_thresholds_decay_as_in_dpl():
    th = thresholds(0, 50)
    assert th == pytest.approx({"att": 0.3, "bg": 0.7, "dj": 0.9})
    th = thresholds(5, 10)                                                        # i = 25 of 50
    assert th["att"] == pytest.approx(0.3 / math.e) and th["bg"] == pytest.approx(0.7 * math.exp(-0.5))


def test_dpl_changes_only_placeholders():
    model, data = _model()
    x0, y = data["test"]
    _, background = box_masks(data.meta["boxes"]["test"])
    params = {k: v.clone() for k, v in model.state_dict().items()}
    base = model.caption_embeddings(y).detach()
    x_T = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    embs, nulls, log = dynamic_prompt_learning(model, x_T, y, background, steps=3, inner=4, lr=0.1)
    assert len(embs) == 3 and len(log["updates"]) == 3
    others = [i for i in range(6) if i not in PLACEHOLDERS]
    for e in embs:
        assert torch.equal(e[:, others], base[:, others])                         # bit for bit
    assert not torch.allclose(embs[-1][:, list(PLACEHOLDERS)], base[:, list(PLACEHOLDERS)])
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k


def test_dpl_lowers_its_losses_and_stops_early():
    model, data = _model(seed=1)
    x0, y = data["test"]
    _, background = box_masks(data.meta["boxes"]["test"])
    x_T = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    _, _, log0 = dynamic_prompt_learning(model, x_T, y, background, steps=1, inner=0)
    _, _, log = dynamic_prompt_learning(model, x_T, y, background, steps=1, inner=15, lr=0.2)
    total = lambda ls: ls["att"] + 0.05 * ls["bg"] + 0.05 * ls["dj"]   # noqa: E731
    assert total(log["final_losses"][0]) < total(log0["final_losses"][0])
    # thresholds every scene already meets -> no update at all
    import vision.diffusion.dpl as dpl
    saved = dpl.DPL_THRESHOLDS
    dpl.DPL_THRESHOLDS = {"att": (25.0, 10.0), "bg": (50.0, 10.0), "dj": (25.0, 10.0)}
    try:
        embs, _, log = dynamic_prompt_learning(model, x_T, y, background, steps=2, inner=5)
    finally:
        dpl.DPL_THRESHOLDS = saved
    assert log["updates"] == [0.0, 0.0]
    assert torch.equal(embs[0], model.caption_embeddings(y))


def test_maps_are_captured_from_every_cross_layer():
    model, data = _model()
    x0, y = data["test"]
    with capture_attention(model) as store:
        model(x0, torch.zeros(len(y), dtype=torch.long), y)
    maps = cross_maps(store, model.cross_names())
    assert maps.shape == (len(y), 72, 6)
    assert torch.allclose(maps.sum(-1), torch.ones(len(y), 72), atol=1e-5)
    with pytest.raises(ValueError, match="no attention recorded"):
        cross_maps(store, ["blocks.9.cross"])


def test_inversion_roundtrip_and_injection():
    model, data = _model()
    x0, y = data["test"]
    # the untrained model predicts eps = 0 (zero-initialised output): DDIM inversion and sampling are exact inverses
    x_T = ddim_invert(model, x0, y, 5)
    assert torch.allclose(denoise(model, x_T, y, 5), x0, atol=1e-5)
    torch.nn.init.normal_(model.out.weight, std=0.1)
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(x0.shape, generator=g)
    src, store = denoise(model, x_T, y, 4, record=True)
    assert len(store["blocks.0.cross"]) == 4
    with inject_attention(model, store, {n: 4 for n in model.cross_names()}):
        replayed, _ = denoise(model, x_T, y, 4, record=True)     # record: every layer on the same (manual) path
    assert torch.allclose(replayed, src, atol=1e-6)
    y_new = (y + 10) % 100
    free = denoise(model, x_T, y_new, 4)
    forced = denoise(model, x_T, y_new, 4, inject=(store, {n: 4 for n in model.cross_names()}))
    assert not torch.allclose(free, forced)
    with pytest.raises(ValueError, match="no layer"):
        with inject_attention(model, store, {"blocks.7.cross": 1}):
            pass


def test_scenes_place_digits_in_their_boxes():
    digits = _digits()
    x, y, boxes = make_scenes(*digits["train"], 5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, *CANVAS) and y.max() < 100
    xd, yd = digits["train"]
    for k in range(2):
        c = crop(x, boxes, k)
        labels = y // 10 if k == 0 else y % 10
        assert all(any(torch.equal(c[i], xd[j]) for j in range(len(yd)) if yd[j] == labels[i]) for i in range(5))
    assert (boxes[:, 0, 1] + 8 <= CANVAS[1] // 2).all() and (boxes[:, 1, 1] >= CANVAS[1] // 2).all()
    assert caption_tokens(torch.tensor([37, 100])).tolist() == [[10, 3, 12, 7, 13, 11], [10, 14, 12, 14, 13, 11]]
    with pytest.raises(ValueError, match="8, 8"):
        make_scenes(torch.zeros(3, 1, 6, 6), torch.zeros(3, dtype=torch.long), 2, torch.Generator())
    model, _ = _model()
    with pytest.raises(ValueError, match="expected x_t"):
        model(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_short_training_lowers_the_loss():
    model, data = _model(scenes=32)
    x, y = data["train"]
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = lambda: {"x": x, "y": y, "t": torch.randint(0, 50, (len(y),), generator=g),   # noqa: E731
                     "noise": torch.randn(x.shape, generator=g), "drop": torch.zeros(len(y), dtype=torch.bool)}
    fixed = batch()
    with torch.no_grad():
        before = float(model.loss(fixed))
    for _ in range(25):
        loss = model.loss(batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(model.loss(fixed)) < before


def test_null_text_inversion_fits_the_inversion_trajectory():
    model, data = _model(seed=2)
    torch.nn.init.normal_(model.out.weight, std=0.01)
    x0, y = data["test"]
    _, background = box_masks(data.meta["boxes"]["test"])
    x_T, traj = ddim_invert(model, x0, y, 3, trajectory=True)
    assert len(traj) == 4 and torch.equal(traj[0], x_T) and torch.equal(traj[-1], x0)
    t0 = torch.full((len(y),), model.schedule.timesteps_for(3)[0])
    t1 = torch.full_like(t0, model.schedule.timesteps_for(3)[1])
    with torch.no_grad():
        eps = guided_eps(model, x_T, t0, model.caption_embeddings(y), null_caption(model, len(y)), 3.0)
        plain = float(((model.schedule.ddim_step(x_T, t0, t1, eps, clip=1.0) - traj[1]) ** 2).mean())
    embs, nulls, log = dynamic_prompt_learning(model, x_T, y, background, 3, inner=0, guidance=3.0,
                                               trajectory=traj, null_inner=10, null_lr=0.1)
    assert all(torch.equal(e, model.caption_embeddings(y)) for e in embs)      # inner = 0: plain words
    assert len(nulls) == 3 and log["null_mse"][0] < 0.95 * plain                # step 0 lands nearer x_{t1}


def test_fixed_positions_and_locating_generated_digits():
    digits = _digits()
    g = torch.Generator().manual_seed(0)
    x, y, boxes = make_scenes(*digits["train"], 4, g, positions="fixed")
    assert boxes.tolist() == [[[2, 2], [2, 14]]] * 4                          # centred in each half of 12 x 24
    assert torch.equal(locate_boxes(x, "fixed"), boxes)
    x, y, boxes = make_scenes(*digits["train"], 30, g)                         # random even corners
    assert torch.equal(locate_boxes(x), boxes)
    blank = torch.full((1, 1, *CANVAS), -1.0)
    blank[0, 0, 4:12, 16:24] = 1.0                                            # ink in the right half's last corner
    assert locate_boxes(blank)[0, 1].tolist() == [4, 16]
    with pytest.raises(ValueError, match="positions"):
        make_scenes(*digits["train"], 2, g, positions="grid")
    with pytest.raises(ValueError, match="positions"):
        locate_boxes(x, "grid")


def test_sincos_positions_and_caption_slots_tell_the_nouns_apart():
    pos = sincos_2d(2, 3, 8)
    assert pos.shape == (1, 6, 8)
    # row-major: token 4 = (row 1, col 1); channels [sin r, cos r, sin c, cos c] with frequencies 1, 1e-2
    f = torch.tensor([1.0, 0.01])
    assert torch.allclose(pos[0, 4], torch.cat([f.sin(), f.cos(), f.sin(), f.cos()]))
    assert torch.equal(pos[0, 1, :4], pos[0, 2, :4]) and not torch.equal(pos[0, 1, 4:], pos[0, 2, 4:])
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(2, 2, 6)
    # the same digit in both noun slots must reach the cross-attention as two different keys (the slot
    # positions are at the token rows' scale): with 0.02-scale slots the two were near copies (cos > 0.99)
    model, _ = _model()
    ctx = model.encode(model.caption_embeddings(torch.tensor([33, 77])))
    cos = torch.nn.functional.cosine_similarity(ctx[:, 1], ctx[:, 3], dim=-1)
    assert (cos < 0.9).all(), cos
    assert torch.allclose(ctx.std(-1, unbiased=False), torch.ones(2, 6), atol=1e-3)   # final LayerNorm


def test_adaln_block_starts_as_cross_attention_only_and_conditioning_is_checked():
    from vision.diffusion.dpl import SceneBlockAda
    torch.manual_seed(0)
    block = SceneBlockAda(16, 2)
    h, c, ctx = torch.randn(3, 5, 16), torch.randn(3, 16), torch.randn(3, 6, 16)
    # adaLN-Zero: gates start at 0, so self-attention and the MLP add nothing; the caption path is open
    assert torch.allclose(block(h, c, ctx), h + block.cross(block.norm2(h), x_src=ctx), atol=1e-6)
    with torch.no_grad():
        block.ada[1].bias.normal_()
    assert not torch.allclose(block(h, c, ctx), h + block.cross(block.norm2(h), x_src=ctx), atol=1e-3)
    data = scene_data(_digits(), {"train": 2, "valid": 2, "test": 2})
    with pytest.raises(ValueError, match="conditioning"):
        SceneDenoiser(CONFIG, data, dim=16, conditioning="film")
    legacy = SceneDenoiser(CONFIG, data, dim=16, conditioning="additive")
    assert legacy(data["test"][0], torch.zeros(2, dtype=torch.long), data["test"][1]).shape == (2, 1, *CANVAS)


def test_min_snr_weighting_against_hand_computed_weights():
    from vision.diffusion.dpl import SceneTask, min_snr_loss
    model, data = _model()
    torch.nn.init.normal_(model.out.weight, std=0.1)
    x, y = (v[:4] for v in data["train"])
    g = torch.Generator().manual_seed(0)
    batch = {"x": x, "y": y, "t": torch.tensor([0, 10, 25, 49]), "noise": torch.randn(x.shape, generator=g),
             "drop": torch.tensor([False, True, False, False])}
    with torch.no_grad():
        got = min_snr_loss(model, batch, 5.0)
        yy = torch.where(batch["drop"], torch.full_like(y, 100), y)
        total = 0.0
        for i in range(4):
            t = batch["t"][i:i + 1]
            abar = float(model.schedule.abar(t))
            snr = abar / (1 - abar)
            x_t = abar ** 0.5 * x[i:i + 1] + (1 - abar) ** 0.5 * batch["noise"][i:i + 1]
            err = float(((model(x_t, t, yy[i:i + 1]) - batch["noise"][i:i + 1]) ** 2).mean())
            total += min(snr, 5.0) / snr * err
        assert got.item() == pytest.approx(total / 4, rel=1e-4)
        # a gamma above every SNR is the plain DDPM loss; the task uses the weighting only when asked
        assert min_snr_loss(model, batch, 1e9).item() == pytest.approx(model.loss(batch).item(), rel=1e-4)
    config = {**CONFIG, "class_dropout": 0.1, "eval_draws": 1, "seed": 0, "dataset": "scenes"}
    assert SceneTask(config, data).loss(model, batch, "train")[0].item() == pytest.approx(model.loss(batch).item())
    with pytest.raises(ValueError, match="snr_gamma"):
        SceneTask(config, data, snr_gamma=0.0)
