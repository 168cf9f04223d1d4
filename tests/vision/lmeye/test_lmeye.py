import numpy as np
import pytest
import torch

from vision.lmeye.data import TOKEN, canvas, fact_token, layout, make_scenes
from vision.lmeye.model import LMEye, Block, DigitCNN, StaticVisual, TinyCausalLM
from vision.lmeye.train import fit, visual_loss

LABELS = np.arange(40) % 10                      # image i shows digit i % 10
IMAGES = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1).expand(40, 1, 8, 8).contiguous()


@pytest.fixture
def scenes():
    return make_scenes(200, LABELS, np.arange(40), np.random.default_rng(0))


def test_answers_follow_the_templates(scenes):
    inv = {v: k for k, v in TOKEN.items()}
    for i in range(len(scenes)):
        d = scenes.digits[i].tolist()
        words = [inv[t] for t in scenes.question[i].tolist()]
        answer = inv[int(scenes.answer[i])]
        if words[0] == "what":
            p = (0 if words[2] == "top" else 2) + (0 if words[3] == "left" else 1)
            assert answer == f"n{d[p]}"
        elif words[0] == "sum":
            row = d[:2] if words[2] == "top" else d[2:]
            assert answer == f"n{sum(row)}"
        else:
            assert answer == ("yes" if int(words[3][1:]) in d else "no")
    assert set(scenes.qtype.tolist()) == {0, 1, 2}


def test_oracle_facts_fill_four_of_the_six_fact_slots(scenes):
    lay = layout()
    slots = lay["prefix"] + lay["insert"]
    for i in range(20):
        row = scenes.tokens[i]
        facts = sorted(int(t) for t in row[slots] if t != TOKEN["<null>"])
        assert facts == sorted(fact_token(int(scenes.digits[i, p]), p) for p in range(4))
        assert row[lay["request"]] == TOKEN["<req>"] and row[lay["answer"]] == TOKEN["<ans>"]


def test_canvas_puts_the_cells_in_reading_order():
    c = canvas(IMAGES, torch.tensor([[1, 2, 3, 4]]))
    assert c.shape == (1, 1, 16, 16)
    assert c[0, 0, 0, 0] == 1 and c[0, 0, 0, 8] == 2 and c[0, 0, 8, 0] == 3 and c[0, 0, 15, 15] == 4


def test_lm_is_causal():
    torch.manual_seed(0)
    lm = TinyCausalLM(dim=16, layers=1, heads=2).eval()
    x = torch.randn(2, layout()["length"], 16)
    y = x.clone()
    y[:, 7:] += torch.randn_like(y[:, 7:])
    h1, _ = lm(x)
    h2, _ = lm(y)
    assert torch.allclose(h1[:, :7], h2[:, :7], atol=1e-6) and not torch.allclose(h1[:, 7:], h2[:, 7:])


def test_cnn_regions_pool_the_feature_map_per_quadrant():
    torch.manual_seed(0)
    cnn = DigitCNN(width=4)
    x = torch.randn(2, 1, 16, 16)
    regions, glob = cnn.regions(x)
    fmap = cnn.trunk(x)
    assert torch.allclose(regions[:, 1], fmap[:, :, :8, 8:].mean((-2, -1)), atol=1e-6)
    assert torch.allclose(glob, regions.mean(1), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        cnn.regions(torch.randn(2, 1, 8, 8))


def test_interaction_queries_read_the_regions_but_regions_never_read_the_queries():
    torch.manual_seed(0)
    block = Block(8, 2)
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    seq = torch.randn(1, 6, 8)
    other = seq.clone()
    other[:, 4:] = torch.randn(1, 2, 8)
    assert torch.allclose(block(seq, mask)[:, :4], block(other, mask)[:, :4], atol=1e-6)


def _lmeye():
    torch.manual_seed(0)
    return LMEye(TinyCausalLM(dim=16, layers=1, heads=2), DigitCNN(width=4), inter_dim=16, heads=2)


def test_zeroing_the_request_makes_the_inserted_tokens_question_independent(scenes):
    model = _lmeye().eval()
    image = canvas(IMAGES, scenes.image_ids[:1]).expand(5, -1, -1, -1)
    questions = scenes.question[:5]
    regions, glob = model.cnn.regions(image)
    _, r = model.first_pass(regions, glob, questions)
    with_request = model.interaction(regions, r)
    zeroed = model.interaction(regions, torch.zeros_like(r))
    assert not torch.allclose(with_request[0], with_request[1:], atol=1e-4)     # the request depends on the question
    assert torch.allclose(zeroed[0], zeroed[1:], atol=1e-6)                     # zeroed: one static look for all


def test_only_the_mapping_is_trained_and_a_short_run_lowers_the_loss(scenes):
    model = _lmeye()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(("lm.", "cnn."))}
    lm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    split = {"train": scenes.subset(torch.arange(160)), "valid": scenes.subset(torch.arange(160, 200)),
             "test": scenes.subset(torch.arange(160, 200))}
    loss, evaluate, _ = visual_loss(split, IMAGES, model.cnn)
    idx = torch.arange(160)
    with torch.no_grad():
        before = float(loss(model, idx))
    fit(model, {"sizes": {"train": 160, "valid": 40, "test": 40}, "loss": loss, "evaluate": evaluate}, 3, 1e-2, 0, batch=32)
    with torch.no_grad():
        after = float(loss(model, idx))
    assert after < before
    assert all(torch.equal(v, model.lm.state_dict()[k]) for k, v in lm_before.items())
    with pytest.raises(ValueError, match="static_tokens"):
        LMEye(TinyCausalLM(dim=16, layers=1, heads=2), DigitCNN(width=4), static_tokens=5)
    assert StaticVisual(TinyCausalLM(dim=16, layers=1, heads=2), DigitCNN(width=4))(
        canvas(IMAGES, scenes.image_ids[:3]), scenes.question[:3]).shape == (3, len(TOKEN))
