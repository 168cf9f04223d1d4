"""KG ablation keys: use_kg and kg_min_degree (RecDataset.filter_kg, applied by recsys.task.load_data)."""
import numpy as np
import pytest

from recsys.data import RecDataset


def _data():
    # items 0, 1; entities 2 (in 3 triples), 3 (in 1 triple), 4 (in 2 triples)
    kg = np.array([[0, 0, 2], [1, 0, 2], [2, 1, 4], [0, 1, 3], [1, 2, 4]])
    pairs = np.array([[0, 0], [0, 1], [1, 1]])
    return RecDataset(name="toy", n_users=2, n_items=2, n_entities=5, n_relations=3, train=pairs,
                      valid=pairs[:0], test=pairs[:0], kg=kg)


def test_min_degree_keeps_triples_whose_non_item_entities_are_frequent():
    data = _data()
    assert data.filter_kg() is data
    kept = data.filter_kg(min_degree=2).kg
    assert kept.tolist() == [[0, 0, 2], [1, 0, 2], [2, 1, 4], [1, 2, 4]]       # entity 3 has one triple
    kept = data.filter_kg(min_degree=3).kg
    assert kept.tolist() == [[0, 0, 2], [1, 0, 2]]                            # 2 has three triples, 4 two
    assert data.kg.shape == (5, 3)                                             # the original is untouched


def test_use_kg_false_drops_every_triple_and_keeps_ids():
    data = _data().filter_kg(use_kg=False)
    assert data.kg.shape == (0, 3) and (data.n_entities, data.n_relations) == (5, 3)
    with pytest.raises(ValueError, match="kg_min_degree"):
        _data().filter_kg(min_degree=-1)


def test_trainer_applies_the_config_keys():
    from graphattn.config import Config
    from recsys.task import load_data
    small = {"n_users": 30, "n_items": 40, "n_clusters": 4, "n_noise_entities": 10}
    full = load_data(Config("KGAT", "planted-kg", config_dict={"planted_kg": small}))
    none = load_data(Config("KGAT", "planted-kg", config_dict={"planted_kg": small, "use_kg": False}))
    assert len(full.kg) > 0 and len(none.kg) == 0
    assert np.array_equal(full.train, none.train)


@pytest.mark.parametrize("model", ["CKE", "KGAT"])
def test_kg_models_train_an_epoch_without_a_kg(model, tmp_path):
    from graphattn.config import Config
    from graphattn.training import RunDir, Trainer
    small = {"layers": [8], "mess_dropout": [0.1]} if model == "KGAT" else {}
    cfg = Config(model, "planted-kg", config_dict={
        "planted_kg": {"n_users": 30, "n_items": 40, "n_clusters": 4, "n_noise_entities": 10}, "use_kg": False,
        "embedding_size": 8, "kg_embedding_size": 8, "epochs": 1, "eval_step": 1, "show_progress": False,
        "checkpoint_dir": str(tmp_path), "log_level": "WARNING", **small})
    run = RunDir.create(cfg)
    try:
        trainer = Trainer.from_config(cfg, run)
        test, data = trainer.fit(), trainer.task.data
    finally:
        run.close()
    assert len(data.kg) == 0 and np.isfinite(test["recall@20"])


@pytest.mark.parametrize("model", ["KGAT", "CKE"])
def test_kg_models_refuse_a_dataset_without_triples_unless_use_kg_is_false(model):
    """#18: a KG model on a dataset with no KG must not silently train as plain CF."""
    import recsys  # noqa: F401
    from graphattn.config import Config
    from graphattn.registry import get_model

    def config(**extra):
        small = {"embedding_size": 4, "kg_embedding_size": 4}
        if model == "KGAT":
            small.update(layers=[4], mess_dropout=[0.0])
        return Config(model, "planted-kg", config_dict={**small, **extra})

    empty = _data().filter_kg(use_kg=False)
    with pytest.raises(ValueError, match=r"needs a knowledge graph, but dataset 'toy' has no triples.*use_kg: false"):
        get_model(model)(config(), empty)
    get_model(model)(config(use_kg=False), empty)     # on purpose: allowed
    get_model(model)(config(), _data())               # with triples: as before
