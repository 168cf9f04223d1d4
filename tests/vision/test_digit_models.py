"""The attention primitives' digit models as registered vision models: NAViT, MoHViT, CARENano."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vision  # noqa: F401  (registers the task, the digits dataset and the models)
from graphattn.attention import GraphAttention
from graphattn.attention.neighborhood import NeighborhoodAttention
from graphattn.config import Config
from graphattn.registry import get_model
from graphattn.training import RunDir, Trainer
from vision.task import load_data
from vision.tiny_vit import TinyViT

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "primitives_digits.py"
SIZES = {"NAViT": 8, "MoHViT": 8, "CARENano": 32}


def _build(name, **kw):
    kw.setdefault("image_size", SIZES[name])
    config = Config(name, "digits", config_dict=kw)
    data = load_data(config)
    return get_model(name)(config, data), data


def _batch(data, n=16):
    x = torch.stack([data.train[i][0] for i in range(n)])
    y = torch.stack([data.train[i][1] for i in range(n)])
    return x, y


def _experiment():
    if not EXPERIMENT.is_file():
        pytest.skip("experiments/primitives_digits.py is gone")
    spec = importlib.util.spec_from_file_location("primitives_digits_under_test", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["NAViT", "MoHViT", "CARENano"])
def test_builds_from_config_finite_loss_and_gradient_on_every_parameter(name):
    torch.manual_seed(0)
    model, data = _build(name)
    model.train()
    batch = _batch(data)
    loss, out, y = model.compute_loss(batch)
    assert out.shape == (16, 10) and torch.equal(y, batch[1])
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no finite gradient for {missing}"
    model.eval()
    preds, targets = model.predict(batch)
    assert preds.shape == (16, 10) and torch.isfinite(preds).all()


def _full_attention_twin(model):
    """A TinyViT with plain GraphAttention in every block, holding ``model``'s weights."""
    twin = TinyViT(1, 8, 1, model.dim, model.depth, lambda i: GraphAttention(model.dim, model.dim, model.heads), 10)
    state = {k.removeprefix("vit.").replace(".attn.attn.", ".attn."): v for k, v in model.state_dict().items()}
    twin.load_state_dict(state)
    return twin.eval()


def test_navit_with_the_whole_grid_as_window_is_full_attention():
    torch.manual_seed(0)
    full, data = _build("NAViT", kernel_size=8)
    x, _ = _batch(data)
    full.eval()
    with torch.no_grad():
        assert torch.allclose(full(x), _full_attention_twin(full)(x)[0], atol=1e-5)
        local, _ = _build("NAViT", kernel_size=3)
        local.load_state_dict(full.state_dict())     # same weights, 3x3 windows: a different function
        local.eval()
        assert (local(x) - _full_attention_twin(local)(x)[0]).abs().max() > 1e-3


def test_navit_window_is_local():
    """3x3 windows, 2 blocks: the corner token depends on exactly the 5x5 corner pixels (full attention: all)."""
    torch.manual_seed(0)
    model, data = _build("NAViT", kernel_size=3)
    model.eval()
    x = _batch(data, 1)[0].requires_grad_(True)
    vit = model.vit
    tokens = vit.embed(x).flatten(2).transpose(1, 2) + vit.pos
    for block in vit.blocks:
        tokens, _ = block(tokens)
    tokens[0, 0].sum().backward()
    # block 2: the corner query's window (shifted inward) holds tokens 0-2 per axis, whose block-1 windows
    # reach token 3; the 3x3 tokenizer adds one pixel: pixels 0-4
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:5, :5] = True
    assert torch.equal(x.grad[0, 0] != 0, expected)


@pytest.mark.parametrize("name,make", [
    ("NAViT", lambda m: (lambda i: NeighborhoodAttention(64, 4, (8, 8), 3, stride=1))),
    ("MoHViT", lambda m: (lambda i: m.MoHRouted(64, 8, 4, 2))),
])
def test_same_seed_same_network_as_the_experiment(name, make):
    """Built with the same seed, the registered model holds the experiment's TinyViT weights exactly."""
    exp = _experiment()
    patch, depth = (1, 2) if name == "NAViT" else (2, 4)
    torch.manual_seed(0)
    reference = exp.TinyViT(8, patch, 64, depth, make(exp))
    torch.manual_seed(0)
    model, data = _build(name)
    ours = {k.removeprefix("vit."): v for k, v in model.state_dict().items()}
    theirs = reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    x, _ = _batch(data)
    model.eval(), reference.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x)[0], atol=1e-6)


def test_moh_balance_loss_is_added_in_training_only():
    torch.manual_seed(0)
    coeff = 0.3
    model, data = _build("MoHViT", balance_coeff=coeff)
    x, y = _batch(data)
    model.train()
    with torch.no_grad():
        out = model.forward_features(x)
        routings = out["extras"]
        assert len(routings) == model.depth == 4
        expected = coeff * torch.stack([r.balance_loss for r in routings]).mean()
        ce = F.cross_entropy(out["logits"], y)
    assert expected.item() > 0
    loss, _, _ = model.compute_loss((x, y))
    assert loss.item() == pytest.approx((ce + expected).item(), rel=1e-6)
    assert model.aux_loss().item() == pytest.approx(expected.item(), rel=1e-6)
    assert model.aux_loss().requires_grad
    # active heads per token: 4 shared + top 2 of 4 routed
    assert all(r.active_fraction.item() == pytest.approx(0.75) for r in routings)
    model.eval()
    with torch.no_grad():
        loss, logits, _ = model.compute_loss((x, y))
        assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
        assert model.aux_loss().item() == 0.0


def test_moh_without_balance_loss_and_the_mha_baseline():
    torch.manual_seed(0)
    model, data = _build("MoHViT", balance_coeff=0.0)
    model.train()
    model.compute_loss(_batch(data))
    assert model.aux_loss().item() == 0.0
    mha, _ = _build("MoHViT", attention="mha")
    assert not any("router" in n for n, _ in mha.named_parameters())
    assert all(type(b.attn) is GraphAttention for b in mha.vit.blocks)
    mha.train()
    mha.compute_loss(_batch(data))
    assert mha.aux_loss().item() == 0.0


def test_wrong_sizes_are_clear_errors():
    with pytest.raises(ValueError, match=r"CARENano is sized for 32x32.*gives 8x8.*--image_size=32"):
        _build("CARENano", image_size=8)
    with pytest.raises(ValueError, match=r"does not fit the 8x8 token grid.*kernel_size <= 8"):
        _build("NAViT", kernel_size=9)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        _build("MoHViT", image_size=9)
    with pytest.raises(ValueError, match="top_k"):
        _build("MoHViT", shared_heads=4, top_k=5)
    with pytest.raises(ValueError, match="attention"):
        _build("MoHViT", attention="linear")


def test_care_nano_sizes_and_ablation_switches():
    # parameter counts of the README's CARE-nano table (experiment: care_nano(**ablation))
    assert sum(p.numel() for p in _build("CARENano")[0].parameters()) == 143_332
    assert sum(p.numel() for p in _build("CARENano", split="symmetric")[0].parameters()) == 144_260
    assert sum(p.numel() for p in _build("CARENano", interaction2=False)[0].parameters()) == 61_988
    model, data = _build("CARENano", memory=False)
    assert all(not block.memory for stage in model.net.stages for block in stage if hasattr(block, "memory"))
    with pytest.raises(ValueError, match="split"):
        _build("CARENano", split="diagonal")


def test_trains_one_epoch_through_the_trainer(tmp_saved):
    config = Config("MoHViT", "digits", config_dict={
        "epochs": 1, "checkpoint_dir": str(tmp_saved), "show_progress": False, "device": "cpu", "seed": 0})
    with RunDir.create(config) as run:
        result = Trainer.from_config(config, run).fit()
        path = run.path
    assert math.isfinite(result["accuracy"]) and result["accuracy"] > 0.2   # chance is 0.1
    assert (path / "best.pt").is_file() and (path / "last.pt").is_file()
