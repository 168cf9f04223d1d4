import numpy as np
import pytest
import torch

from vision.base import VisionData
from vision.datasets.shapes_grounding import COLOURS, QuestionEncoder, GroundingSet, make_scene
from vision.sab import SABGrounding, SABGroundingNet, SentenceAttention, mask_iou




def test_sentence_attention_equals_hand_computed_gate():
    torch.manual_seed(0)
    sab = SentenceAttention(6, 5, expansion=2)
    feat, s = torch.randn(3, 6, 4, 4), torch.randn(3, 5)
    mlp = sab.attn.message.mlp
    gate = torch.softmax(mlp[3](torch.relu(mlp[1](mlp[0](s)))), -1)          # softmax_C(W2 ReLU(LN(W1 s)))
    assert torch.allclose(gate.sum(-1), torch.ones(3))
    assert torch.allclose(sab(feat, s), feat * gate[:, :, None, None], atol=1e-6)
    # the sparse path on the star graph (sentence node -> every pixel) gives the same gate per pixel
    x = feat[0].flatten(1).T                                                   # (HW, C)
    edge_index = torch.stack([torch.zeros(16, dtype=torch.long), torch.arange(16)])
    out = sab.attn(x, edge_index, x_src=s[:1])
    assert torch.allclose(out, x * gate[0], atol=1e-6)


def test_sigmoid_gate_is_not_normalised():
    torch.manual_seed(0)
    sab = SentenceAttention(6, 5, channel_norm="sigmoid")
    g = sab.gate(torch.randn(4, 5))
    assert torch.all((g > 0) & (g < 1)) and not torch.allclose(g.sum(-1), torch.ones(4))
    with pytest.raises(ValueError, match="channel_norm"):
        SentenceAttention(6, 5, channel_norm="relu")


def test_output_depends_on_question_only_through_gates():
    torch.manual_seed(0)
    img, s = torch.randn(2, 3, 16, 16), torch.randn(2, 8)
    for gate in ("softmax", "sigmoid", "concat"):
        net = SABGroundingNet(8, channels=(4, 8, 8, 8), gate=gate).eval()
        assert net(img, s).shape == (2, 1, 16, 16)
        assert not torch.allclose(net(img, s), net(img, s.flip(0)))
    net = SABGroundingNet(8, channels=(4, 8, 8, 8), gate="none").eval()
    assert torch.equal(net(img, s), net(img, s.flip(0)))


def test_scene_generation_rules_and_encoder():
    rng = np.random.default_rng(0)
    enc = QuestionEncoder(16)
    for _ in range(20):
        image, q, target, wrong = make_scene(rng, 32)
        assert target.any() and wrong.any() and not (target & wrong).any()
        colour, shape = q.rstrip("?.").split()[-2:]
        assert colour in COLOURS
        # the target's pixels carry the named colour (up to the shade factor)
        rgb = image[:, target].mean(1)
        assert np.argmax(rgb) == np.argmax(COLOURS[colour]) or colour == "yellow"
    assert torch.allclose(enc("where is the red circle?"), enc("Where is the RED circle"))
    assert not torch.allclose(enc("where is the red circle?"), enc("where is the red square?"))
    with pytest.raises(ValueError, match="vocabulary"):
        enc("where is the purple circle?")


def test_mask_iou_hand_computed():
    a = torch.tensor([[1, 1, 0, 0]]).bool()
    b = torch.tensor([[0, 1, 1, 0]]).bool()
    assert float(mask_iou(a, b)[0]) == pytest.approx(1 / 3)
    assert float(mask_iou(torch.zeros(1, 4), torch.zeros(1, 4))[0]) == 1.0


def test_registered_model_learns_a_batch():
    torch.manual_seed(0)
    ds = GroundingSet(16, 16, 0, QuestionEncoder(8))
    data = VisionData(ds, ds, ds, num_classes=2, meta={"question_dim": 8, "in_channels": 3})
    cfg = {"sab_channels": [4, 8, 8, 8], "sab_gate": "softmax", "sab_expansion": 2, "sab_dropout": 0.0,
           "dice_weight": 1.0}
    model = SABGrounding(cfg, data)
    batch = ((ds.images, ds.embeddings), ds.masks)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    first = None
    for _ in range(15):
        loss, pred, tgt = model.compute_loss(batch)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    assert pred.shape == (16 * 256, 2) and tgt.shape == (16 * 256,)
