import logging

import numpy as np
import pytest

from recsys.data import (RecDataset, detect_format, load_atomic, load_dataset, load_kgat, read_atomic_file,
                         write_atomic_files, write_kgat_files)


def _pairs_as_tokens(ds: RecDataset, split: str) -> set:
    a = getattr(ds, split)
    return set(zip(ds.user_tokens[a[:, 0]].tolist(), ds.item_tokens[a[:, 1]].tolist()))


def _kg_as_tokens(ds: RecDataset) -> set:
    names = np.asarray(ds.relation_names)
    return set(zip(ds.entity_tokens[ds.kg[:, 0]].tolist(), names[ds.kg[:, 1]].tolist(),
                   ds.entity_tokens[ds.kg[:, 2]].tolist()))


# ---------------------------------------------------------------- round trips


def test_atomic_round_trip_is_identical(tmp_path, small_planted):
    write_atomic_files(small_planted, tmp_path / "a", "toy")
    r1 = load_atomic(tmp_path / "a", {"seed": 7})
    write_atomic_files(r1, tmp_path / "b", "toy")
    r2 = load_atomic(tmp_path / "b", {"seed": 7})
    assert r1.equals(r2)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(getattr(r1, f"{split}_time"), getattr(r2, f"{split}_time"))
    assert r1.interactions.equals(r2.interactions)
    # The same interactions and KG as the generator made, under the token names.
    assert r1.stats()["n_interactions"] == small_planted.stats()["n_interactions"]
    assert _kg_as_tokens(r1) == {(small_planted.entity_tokens[h], small_planted.relation_names[r],
                                  small_planted.entity_tokens[t]) for h, r, t in small_planted.kg.tolist()}


def test_atomic_presplit_keeps_the_given_splits(tmp_path, hand_dataset):
    write_atomic_files(hand_dataset, tmp_path, presplit=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "hand.kg", "hand.link", "hand.test.inter", "hand.train.inter", "hand.valid.inter"]
    back = load_dataset(tmp_path)
    for split in ("train", "valid", "test"):
        assert _pairs_as_tokens(back, split) == _pairs_as_tokens(hand_dataset, split)
    assert _kg_as_tokens(back) == _kg_as_tokens(hand_dataset)
    assert back.n_items == 4 and back.n_entities == 6 and back.n_relations == 2
    # item i is entity i: the entity token of every item is its linked entity
    idx = {t: i for i, t in enumerate(back.item_tokens)}
    for tok, ent in zip(hand_dataset.item_tokens, hand_dataset.entity_tokens[:4]):
        assert back.entity_tokens[idx[tok]] == ent


def test_kgat_round_trip_is_identical(tmp_path, small_planted):
    write_kgat_files(small_planted, tmp_path / "a")
    r1 = load_kgat(tmp_path / "a", {"valid_ratio": 0.2, "seed": 1})
    write_kgat_files(r1, tmp_path / "b")
    r2 = load_kgat(tmp_path / "b", {"valid_ratio": 0.2, "seed": 1})
    assert r1.equals(r2)
    np.testing.assert_array_equal(r1.kg, small_planted.kg)
    assert list(r1.relation_names) == small_planted.relation_names
    both = lambda ds: set(map(tuple, np.concatenate([ds.train, ds.valid]).tolist()))  # noqa: E731
    assert both(r1) == both(small_planted)
    assert set(map(tuple, r1.test.tolist())) == set(map(tuple, small_planted.test.tolist()))


def test_kgat_reader_counts_and_valid_carve(tmp_path):
    (tmp_path / "train.txt").write_text("0 1 2 3 4 5 6 7 8 9 10\n1 3\n2\n3 2 2 4\n")
    (tmp_path / "test.txt").write_text("0 11\n1 0\n")
    (tmp_path / "kg_final.txt").write_text("0 0 12\n11 1 13\n")
    ds = load_kgat(tmp_path, {"valid_ratio": 0.1})
    assert (ds.n_users, ds.n_items, ds.n_entities, ds.n_relations) == (4, 12, 14, 2)
    assert len(ds.valid) == 2  # user 0: round(1.1) = 1; user 1 (1 item) none; user 3 (2 unique items) 1
    assert sorted(ds.valid[:, 0].tolist()) == [0, 3]
    assert len(ds.train) + len(ds.valid) == 13  # duplicates removed ("2 2")
    assert not set(map(tuple, ds.valid.tolist())) & set(map(tuple, ds.train.tolist()))
    assert ds.user_tokens is None and ds.relation_names is None
    assert len(load_kgat(tmp_path, {"valid_ratio": 0.0}).valid) == 0


def test_kgat_list_files_give_names(tmp_path, hand_dataset):
    write_kgat_files(hand_dataset, tmp_path)
    (tmp_path / "item_list.txt").write_text("org_id remap_id freebase_id\nA 0 m.a\nB 1 m.b\nC 2 m.c\nD 3 m.d\n")
    ds = load_kgat(tmp_path, {})
    assert ds.item_tokens.tolist() == ["A", "B", "C", "D"]
    assert ds.user_tokens.tolist() == ["ua", "ub", "uc"]
    assert ds.relation_names == ["genre", "by"]


# ---------------------------------------------------------------- atomic semantics


def _write(path, text):
    path.write_text(text)
    return path


def test_atomic_link_and_entity_space(tmp_path, caplog):
    _write(tmp_path / "t.inter", "user_id:token\titem_id:token\ttimestamp:float\n"
           "u1\ti1\t3\nu1\ti2\t1\nu2\ti2\t2\nu2\ti3\t5\nu2\ti3\t9\n")
    _write(tmp_path / "t.link", "item_id:token\tentity_id:token\ni1\te1\ni2\te2\ni9\te9\n")
    _write(tmp_path / "t.kg", "head_id:token\trelation_id:token\ttail_id:token\n"
           "e1\tr1\tx1\ne2\tr2\te1\ne9\tr1\tx2\nx1\tr2\tx3\n")
    with caplog.at_level(logging.INFO, logger="recsys.data.atomic"):
        ds = load_atomic(tmp_path, {"eval_args": {"split": {"RS": [1, 0, 0]}}})
    assert "dropped 1 links" in caplog.text
    # time-ordered first appearance: i2 (t=1), i1 (t=3), i3 (t=5); the duplicate (u2, i3) is dropped
    assert ds.item_tokens.tolist() == ["i2", "i1", "i3"]
    assert ds.user_tokens.tolist() == ["u1", "u2"]
    assert len(ds.train) == 4
    assert ds.entity_tokens.tolist() == ["e2", "e1", "i3", "x1", "e9", "x2", "x3"]
    assert ds.relation_names == ["r1", "r2"]
    np.testing.assert_array_equal(ds.kg, [[1, 0, 3], [0, 1, 1], [4, 0, 5], [3, 1, 6]])
    assert (ds.n_entities, ds.n_relations) == (7, 2)


def test_atomic_entity_linked_to_two_items_gets_edges_for_both(tmp_path):
    _write(tmp_path / "t.inter", "user_id:token\titem_id:token\nu\ta\nu\tb\n")
    _write(tmp_path / "t.link", "item_id:token\tentity_id:token\na\tE\nb\tE\n")
    _write(tmp_path / "t.kg", "head_id:token\trelation_id:token\ttail_id:token\nE\tr\tX\n")
    ds = load_atomic(tmp_path, {"eval_args": {"split": {"RS": [1, 0, 0]}}})
    np.testing.assert_array_equal(ds.kg, [[0, 0, 2], [1, 0, 2]])


def test_atomic_threshold_and_features(tmp_path):
    _write(tmp_path / "t.inter", "user_id:token\titem_id:token\trating:float\nu\ta\t5\nu\tb\t2\nv\tb\t4\n")
    _write(tmp_path / "t.item", "item_id:token\tclass:token_seq\na\tx y\nb\tz\nc\tw\n")
    ds = load_atomic(tmp_path, {"threshold": {"rating": 4}, "eval_args": {"split": {"RS": [1, 0, 0]}}})
    assert len(ds.train) == 2 and ds.train_rating.tolist() == [5.0, 4.0]
    assert ds.item_feat["class"].tolist() == ["x y", "z"]
    assert ds.kg.shape == (0, 3) and ds.n_entities == ds.n_items == 2


@pytest.mark.parametrize("body, message", [
    ("u1\ti1\t3\t1\nu2\ti2\t4\n", r"t\.inter line 3: expected 4 tab-separated fields .*got 3"),
    ("u1\ti1\t3\t1\nu2\ti2\t4\t1\t9\n", r"t\.inter line 3: expected 4 tab-separated fields .*got 5"),
    ("u1\ti1\tthree\t1\n", r"t\.inter line 2, column 'rating': expected a number .*got 'three'"),
])
def test_atomic_malformed_line_names_file_and_line(tmp_path, body, message):
    _write(tmp_path / "t.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + body)
    with pytest.raises(ValueError, match=message):
        load_atomic(tmp_path, {})


def test_atomic_missing_column_empty_file_and_bad_header(tmp_path):
    _write(tmp_path / "t.inter", "user_id:token\tmovie:token\nu\ta\n")
    with pytest.raises(ValueError, match=r"t\.inter line 1 \(header\): missing required column 'item_id' "
                                         r"\(config key ITEM_ID_FIELD\)"):
        load_atomic(tmp_path, {})
    assert len(load_atomic(tmp_path, {"ITEM_ID_FIELD": "movie", "eval_args": {"split": {"RS": [1, 0, 0]}}}).train) == 1
    _write(tmp_path / "t.inter", "")
    with pytest.raises(ValueError, match=r"t\.inter: file is empty"):
        load_atomic(tmp_path, {})
    _write(tmp_path / "t.inter", "user_id:token\titem_id\nu\ta\n")
    with pytest.raises(ValueError, match=r"line 1 \(header\), field 2: expected 'name:type'"):
        read_atomic_file(tmp_path / "t.inter")
    _write(tmp_path / "t.inter", "user_id:token\titem_id:token\n")
    with pytest.raises(ValueError, match="header but no data lines"):
        read_atomic_file(tmp_path / "t.inter")


def test_kgat_malformed_lines(tmp_path):
    _write(tmp_path / "train.txt", "0 1 2\n1 x 3\n")
    _write(tmp_path / "test.txt", "0 3\n")
    with pytest.raises(ValueError, match=r"train\.txt line 2: expected non-negative integer ids, got 'x'"):
        load_kgat(tmp_path, {})
    _write(tmp_path / "train.txt", "0 1 2\n1 3\n")
    _write(tmp_path / "kg_final.txt", "0 0 4\n1 0\n")
    with pytest.raises(ValueError, match=r"kg_final\.txt line 2: expected 3 space-separated ids"):
        load_kgat(tmp_path, {})
    _write(tmp_path / "test.txt", "")
    with pytest.raises(ValueError, match=r"test\.txt: file is empty"):
        load_kgat(tmp_path, {})
    (tmp_path / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test.txt"):
        load_kgat(tmp_path, {})


def test_format_detection(tmp_path, hand_dataset):
    write_kgat_files(hand_dataset, tmp_path / "k")
    write_atomic_files(hand_dataset, tmp_path / "a")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "readme.md").write_text("x")
    assert detect_format(tmp_path / "k") == "kgat"
    assert detect_format(tmp_path / "a") == "atomic"
    with pytest.raises(ValueError, match=r"train\.txt .*\*\.inter.*readme\.md"):
        load_dataset(tmp_path / "none")
    assert load_dataset(tmp_path / "k").n_items == 4
    assert load_dataset(tmp_path / "a", {"eval_args": {"split": {"RS": [1, 0, 0]}}}).n_items == 4
    with pytest.raises(ValueError, match="(?i)unknown dataset 'ml-100'.*did you mean.*ml-100k"):
        load_dataset("ml-100")


def test_dataset_validation_and_csr(hand_dataset):
    m = hand_dataset.csr("train")
    assert m.shape == (3, 4) and m.nnz == 3 and m[0, 1] == 1.0
    with pytest.raises(ValueError, match="unknown split"):
        hand_dataset.csr("dev")
    with pytest.raises(ValueError, match="test has item ids outside"):
        RecDataset("bad", 2, 2, 2, 0, train=[[0, 0]], valid=None, test=[[1, 5]], kg=None)
    assert "3 users, 4 items" in repr(hand_dataset)


# ---------------------------------------------------------------- real data


def test_ml100k_counts(ml100k):
    s = ml100k.stats()
    assert (s["n_users"], s["n_items"], s["n_interactions"]) == (943, 1682, 100000)
    assert (s["n_relations"], s["n_triples"], s["n_entities"]) == (24, 91631, 34712)
    # RS 0.8/0.1/0.1 per user (every ml-100k user has >= 20 ratings)
    assert (s["n_train"], s["n_valid"], s["n_test"]) == (80808, 9596, 9596)
    assert ml100k.train_time is not None and ml100k.test_rating is not None
    assert ml100k.user_feat.shape == (943, 5)
    assert list(ml100k.interactions.columns) == ["user", "item", "timestamp", "rating"]
    linked = (ml100k.entity_tokens[: ml100k.n_items] != ml100k.item_tokens).sum()
    assert linked == 1598  # every line of ml-100k.link names an item with ratings


def test_ml100k_threshold_via_registry_loader():
    from recsys.data.registry import load_ml100k

    ds = load_ml100k({"threshold": {"rating": 4}})
    assert ds.stats()["n_interactions"] == 55375


# ---------------------------------------------------------------- synthetic


def test_planted_kg_is_deterministic_and_its_kg_is_informative():
    import scipy.sparse as sp
    import torch

    from recsys.data import item_clusters, planted_kg
    from recsys.evaluation import FullRankEvaluator

    ds = planted_kg(seed=5)
    assert ds.equals(planted_kg(seed=5)) and not ds.equals(planted_kg(seed=6))
    assert (ds.n_relations, ds.n_entities) == (3, 1200 + 24 + 300)
    clusters = item_clusters(ds)
    assert (clusters >= 0).all() and np.bincount(clusters).min() == 1200 // 24
    tr, ex = ds.csr("train"), [ds.csr("train"), ds.csr("valid")]
    pop = np.asarray(tr.sum(0)).ravel()
    onehot = sp.csr_matrix((np.ones(ds.n_items), (np.arange(ds.n_items), clusters)))
    kg_score = (tr @ onehot).toarray() @ onehot.T.toarray() + 1e-3 * pop / pop.max()
    co = (tr.T @ tr).toarray()
    np.fill_diagonal(co, 0)
    cf_score = np.asarray(tr @ co) + 1e-3 * pop / pop.max()
    ev = FullRankEvaluator([20], ["recall"])
    recall = {name: ev.evaluate_scores(lambda u, s=s: torch.tensor(s[u], dtype=torch.float32),
                                       ds.csr("test"), ex)["recall@20"]
              for name, s in (("kg", kg_score), ("cf", cf_score), ("pop", np.tile(pop, (ds.n_users, 1))))}
    # knowing the cluster edge beats co-occurrence, which beats popularity
    assert recall["kg"] > 1.3 * recall["cf"] > 1.3 * recall["pop"]


def test_atomic_header_only_kg_and_link_mean_no_kg(tmp_path):
    _write(tmp_path / "t.inter", "user_id:token\titem_id:token\nu\ta\n")
    _write(tmp_path / "t.kg", "head_id:token\trelation_id:token\ttail_id:token\n")
    _write(tmp_path / "t.link", "item_id:token\tentity_id:token\n")
    ds = load_atomic(tmp_path, {"eval_args": {"split": {"RS": [1, 0, 0]}}})
    assert ds.kg.shape == (0, 3) and (ds.n_entities, ds.n_relations) == (1, 0)


def test_kgat_ids_past_the_list_files_name_file_line_and_list(tmp_path):
    _write(tmp_path / "train.txt", "0 1 2\n1 2 3\n")
    _write(tmp_path / "test.txt", "0 3\n1 1\n")
    _write(tmp_path / "kg_final.txt", "0 0 5\n1 1 6\n2 4 7\n")
    assert load_kgat(tmp_path, {}).n_relations == 5  # without list files the ids define the counts
    _write(tmp_path / "relation_list.txt", "org_id remap_id\ngenre 0\nby 1\n")
    with pytest.raises(ValueError, match=r"kg_final\.txt line 3: relation id 4 is out of range: "
                                         r"relation_list\.txt lists 2 relations"):
        load_kgat(tmp_path, {})
    _write(tmp_path / "kg_final.txt", "0 0 5\n1 1 6\n")
    _write(tmp_path / "test.txt", "0 3\n1 1\n1 2 9\n")
    _write(tmp_path / "item_list.txt", "org_id remap_id\na 0\nb 1\nc 2\nd 3\n")
    with pytest.raises(ValueError, match=r"test\.txt line 3: item id 9 is out of range: item_list\.txt lists 4"):
        load_kgat(tmp_path, {})
    _write(tmp_path / "test.txt", "0 3\n1 1\n")
    _write(tmp_path / "user_list.txt", "org_id remap_id\nu 0\n")
    with pytest.raises(ValueError, match=r"train\.txt line 2: user id 1 is out of range: user_list\.txt lists 1"):
        load_kgat(tmp_path, {})


def test_kgat_warns_about_test_users_and_items_never_trained(tmp_path, caplog):
    _write(tmp_path / "train.txt", "0 1 2\n1 2 3\n")
    _write(tmp_path / "test.txt", "0 3\n5 1\n1 7\n")
    with caplog.at_level(logging.WARNING, logger="recsys.data.kgat_format"):
        ds = load_kgat(tmp_path, {})
    assert ds.n_users == 6 and ds.n_items == 8
    text = caplog.text
    assert "1 test user(s) never appear in train.txt (first: user 5)" in text
    assert "1 test item(s) never appear in train.txt (first: item 7)" in text
