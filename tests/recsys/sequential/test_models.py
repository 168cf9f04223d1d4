import math

import numpy as np
import pytest
import torch

import recsys.sequential  # noqa: F401  (registers task, models, datasets)
from graphattn.config import Config
from graphattn.registry import list_models
from recsys.sequential.data import SeqData, load_drifting_interest
from recsys.sequential.gru4rec import GRU4Rec
from recsys.sequential.idnp import IDNP, gaussian_kl, wasserstein2
from recsys.sequential.sasrec import SASRec

MODELS = {"IDNP": IDNP, "SASRec": SASRec, "GRU4Rec": GRU4Rec}
TINY = {"embedding_size": 16, "max_len": 8}
TINY_MODEL = {"IDNP": {"time_dim": 8, "latent_dim": 8, "anneal_steps": 0}, "SASRec": {"inner_size": 16},
              "GRU4Rec": {"hidden_size": 16}}


def _config(name: str, **extra) -> Config:
    return Config(name, "drifting-interest", config_dict={
        "drift_n_users": 40, "drift_n_clusters": 5, "drift_cluster_size": 4, "drift_n_steps": 24,
        "drift_max_history": 12, "show_progress": False, **TINY, **TINY_MODEL[name], **extra})


@pytest.fixture(scope="module")
def tiny_data() -> SeqData:
    return load_drifting_interest(_config("IDNP"))


def test_models_registered():
    assert {"IDNP", "SASRec", "GRU4Rec"} <= set(list_models("sequential"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_finite_loss_and_gradient_on_every_parameter(name, tiny_data):
    torch.manual_seed(0)
    model = MODELS[name](_config(name), tiny_data)
    batch = next(tiny_data.train_batches(16, 8, np.random.default_rng(0), random_window=False))
    loss, parts = model.calculate_loss(batch)
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in parts.values())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}.{pname} has an all-zero gradient"
    scores = model.eval().full_sort_predict(tiny_data.eval_batch(np.arange(5), "test", 8))
    assert scores.shape == (5, tiny_data.n_items) and torch.isfinite(scores).all()


@pytest.mark.parametrize("name", ["SASRec", "GRU4Rec"])
def test_future_items_do_not_change_earlier_outputs(name, tiny_data):
    torch.manual_seed(0)
    model = MODELS[name](_config(name), tiny_data).eval()
    items = torch.randint(0, tiny_data.n_items, (3, 8))
    lengths = torch.full((3,), 8)
    out = model(items, lengths)
    changed = items.clone()
    changed[:, 5:] = torch.randint(0, tiny_data.n_items, (3, 3))
    out2 = model(changed, lengths)
    torch.testing.assert_close(out[:, :5], out2[:, :5])
    assert not torch.allclose(out[:, 5:], out2[:, 5:])           # the mask is not hiding everything


def test_sasrec_padding_does_not_leak(tiny_data):
    model = SASRec(_config("SASRec"), tiny_data).eval()
    items = torch.tensor([[1, 2, 3, tiny_data.pad, tiny_data.pad]])
    other = torch.tensor([[1, 2, 3, 7, 9]])
    a = model(items, torch.tensor([3]))[:, :3]
    b = model(other, torch.tensor([3]))[:, :3]
    torch.testing.assert_close(a, b)


def test_idnp_deterministic_path_dense_equals_sparse(tiny_data):
    torch.manual_seed(0)
    model = IDNP(_config("IDNP"), tiny_data).eval()
    batch = next(tiny_data.train_batches(6, 8, np.random.default_rng(1), random_window=False))
    from recsys.sequential.graphs import context_target_mask
    fr, keys = model.encode_frames(batch["items"], batch["times"], batch["lengths"])
    n_q = batch["items"].shape[1]
    qpos = torch.arange(n_q)[None].expand(6, -1)
    mask = context_target_mask(fr["valid"], fr["end"], qpos, torch.full((6,), fr["valid"].shape[1] - 1),
                               qpos < batch["lengths"][:, None])
    assert (~mask.any(-1)).any() and mask.any()                    # some queries see nothing, some see frames
    dense = model.deterministic_path(batch["times"], keys, mask, fr["time"], path="dense")
    sparse = model.deterministic_path(batch["times"], keys, mask, fr["time"], path="sparse")
    torch.testing.assert_close(dense, sparse, atol=1e-5, rtol=1e-5)
    # a query with no visible context frame aggregates zeros: the output projection's bias
    empty = dense[~mask.any(-1)]
    torch.testing.assert_close(empty, model.deterministic.update.proj.bias.expand_as(empty))
    torch.manual_seed(3)
    a = model.full_sort_predict(tiny_data.eval_batch(np.arange(6), "test", 8))
    model.det_path = "sparse"
    b = model.full_sort_predict(tiny_data.eval_batch(np.arange(6), "test", 8))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_idnp_prediction_uses_target_time_not_target_item(tiny_data):
    model = IDNP(_config("IDNP"), tiny_data).eval()
    batch = tiny_data.eval_batch(np.arange(4), "test", 8)
    s1 = model.full_sort_predict(batch)
    batch2 = dict(batch, target=(batch["target"] + 1) % tiny_data.n_items)
    torch.testing.assert_close(s1, model.full_sort_predict(batch2))
    batch3 = dict(batch, target_time=batch["target_time"] + 5.0)
    assert not torch.allclose(s1, model.full_sort_predict(batch3))
    var = model.predictive_variance(batch, batch["target_time"][:, None] + torch.arange(3.0)[None], n_samples=4)
    assert var.shape == (4, 3) and (var > 0).all()


def test_regularisers_closed_forms():
    mu1, s1 = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.5]])
    mu2, s2 = torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.5]])
    assert wasserstein2(mu1, s1, mu2, s2).item() == pytest.approx(1.0 + 1.0)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu1, s1),
                                            torch.distributions.Normal(mu2, s2)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu1, s1, mu2, s2), ref)
    assert wasserstein2(mu1, s1, mu1, s1).item() == 0.0


def test_idnp_annealing_and_options(tiny_data):
    model = IDNP(_config("IDNP", anneal_steps=4, reg_weight=2.0, regularizer="kl"), tiny_data).train()
    batch = next(tiny_data.train_batches(8, 8, np.random.default_rng(0), random_window=False))
    betas = [model.calculate_loss(batch)[1]["beta"] for _ in range(6)]
    assert betas == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    with pytest.raises(ValueError, match="regularizer"):
        IDNP(_config("IDNP", regularizer="mmd"), tiny_data)


def test_every_yaml_key_is_documented():
    import re
    from pathlib import Path

    import yaml

    root = Path(recsys.sequential.__file__).parent
    files = [root / "overall.yaml", *sorted((root / "model").glob("*.yaml")), *sorted((root / "dataset").glob("*.yaml"))]
    assert {f.stem for f in (root / "model").glob("*.yaml")} == set(MODELS)
    for f in files:
        keys = yaml.safe_load(f.read_text()) or {}
        for line in f.read_text().splitlines():
            m = re.match(r"^(\w+):", line)
            if m:
                assert m.group(1) in keys
                assert re.search(r"#\s*\((int|float|str|bool|list|dict)\)", line), f"{f.name}: '{m.group(1)}' has no '# (type) meaning'"
