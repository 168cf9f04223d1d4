"""Run-folder reload, faiss index export and the Recommender: equal to the exact masked top-K of the model."""
import numpy as np
import pytest
import torch

import recsys  # noqa: F401  (registers the recsys task, models and datasets)
from graphattn.config import Config
from graphattn.registry import get_model
from graphattn.training import RunDir
from recsys.evaluation import Retriever
from recsys.export import Recommender, export_index, load_run
from recsys.task import load_data

SMALL = {"planted_kg": {"n_users": 30, "n_items": 50, "n_clusters": 4, "n_noise_entities": 10, "seed": 5},
         "embedding_size": 8, "show_progress": False, "log_level": "WARNING"}
MODELS = {"KGAT": {"kg_embedding_size": 4, "layers": [8, 4], "mess_dropout": [0.1, 0.1]}, "BPRMF": {}}


@pytest.fixture(params=sorted(MODELS))
def run_folder(request, tmp_path):
    """A run folder written with the real RunDir API holding a (randomly initialised, not trained) model."""
    name = request.param
    config = Config(name, "planted-kg", config_dict={**SMALL, **MODELS[name], "checkpoint_dir": str(tmp_path)})
    torch.manual_seed(11)
    data = load_data(config)
    model = get_model(name)(config, data)
    if name == "KGAT":
        model.refresh_attention()     # a non-initial attention buffer, which the checkpoint must carry
    with RunDir.create(config) as run:
        run.save_checkpoint({"model": model.state_dict(), "epoch": 0}, "best.pt")
    model.eval()
    return run.path, model, data


def exact_topk(model, data, users, k):
    with torch.no_grad():
        u, i = model.full_sort_embeddings()
    scores = (u[users].double() @ i.double().T).detach().numpy()
    train = data.csr("train")[users].toarray() > 0
    scores[train] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


def test_load_run_restores_the_model(run_folder):
    path, model, data = run_folder
    loaded, data2, config = load_run(path)
    assert config["model"] == type(model).__name__ and not loaded.training
    assert data2.equals(data)
    for (ka, a), (kb, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b), ka
    with torch.no_grad():
        assert torch.allclose(model.full_sort_embeddings()[0], loaded.full_sort_embeddings()[0])


@pytest.mark.parametrize("backend", ["faiss", "exact"])
def test_recommendations_equal_exact_masked_topk(run_folder, backend):
    path, model, data = run_folder
    rec = Recommender.from_run(path, backend=backend)
    users = np.arange(data.n_users)
    items, scores = rec.recommend(users, k=10, ids="internal")
    want_items, want_scores = exact_topk(model, data, users, 10)
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    train = data.csr("train")
    assert not any(train[u, i] for u, row in zip(users, items) for i in row)
    # without exclusion the training items come back when they score high
    items_all, _ = rec.recommend(users, k=10, exclude_train=False, ids="internal")
    np.testing.assert_array_equal(items_all, exact_topk_unmasked(model, users, 10))


def exact_topk_unmasked(model, users, k):
    with torch.no_grad():
        u, i = model.full_sort_embeddings()
    return np.argsort(-(u[users].double() @ i.double().T).detach().numpy(), axis=1, kind="stable")[:, :k]


def test_exported_index_serves_the_same_items(run_folder, tmp_path):
    path, model, data = run_folder
    loaded, data2, _ = load_run(path)
    out = export_index(loaded, data2, tmp_path / "idx" / "items.faiss")
    assert out.is_file() and not [f for f in out.parent.iterdir() if f.name.startswith(".")]
    index_items = Retriever.load(out).item_emb
    with torch.no_grad():
        assert torch.allclose(index_items, model.full_sort_embeddings()[1].float())
    rec = Recommender.from_run(path, index_path=out)
    items, _ = rec.recommend([0, 3, 7], k=5, ids="internal")
    np.testing.assert_array_equal(items, exact_topk(model, data, np.array([0, 3, 7]), 5)[0])
    assert rec.item_names(np.array([[1, -1]])).tolist() == [[data.item_tokens[1], ""]]


def test_errors(run_folder, tmp_path):
    path, _, data = run_folder
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="no nothing.pt"):
        load_run(path, checkpoint="nothing.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_run(tmp_path / "missing")
    rec = Recommender.from_run(path, backend="exact")
    with pytest.raises(ValueError, match="user ids"):
        rec.recommend([data.n_users], k=3, ids="internal")
    with pytest.raises(ValueError, match="k must be"):
        rec.recommend([0], k=0)
    with pytest.raises(KeyError, match=f"unknown user id '{data.n_users}'"):
        rec.recommend([data.n_users], k=3)
    with pytest.raises(ValueError, match="ids must be 'raw'"):
        rec.recommend([0], k=3, ids="index")


def _rename(data):
    """Give the dataset raw ids unlike its indices (as RecBole tokens are): user i -> 'u<i>', item j -> 'i<j>'."""
    data.user_tokens = np.array([f"u{i}" for i in range(data.n_users)])
    data.item_tokens = np.array([f"i{j}" for j in range(data.n_items)])
    data._csr_cache.clear()


def test_raw_ids_in_and_out(run_folder):
    path, _, _ = run_folder
    rec = Recommender.from_run(path, backend="exact")
    _rename(rec.data)
    internal, s_int = rec.recommend([3, 7], k=5, ids="internal")
    raw, s_raw = rec.recommend(["u3", "u7"], k=5)
    assert raw.tolist() == [[f"i{j}" for j in row] for row in internal]
    np.testing.assert_array_equal(s_raw, s_int)
    with pytest.raises(KeyError, match="unknown user id 'u3x'.*did you mean 'u3'"):
        rec.recommend(["u3x"], k=5)
    assert rec.data.user_index(["u0", "u5"]).tolist() == [0, 5]
    assert rec.data.item_raw(np.array([2, -1])).tolist() == ["i2", ""]
