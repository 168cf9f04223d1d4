import numpy as np
import pytest
import torch

from recsys.multitask.data import (CsvSchema, chronological_split, history_sequences, load_kuairand_pure,
                                   load_qb_video, read_multitask_csv, synthetic_three_task,
                                   write_kuairand_fixture, write_multitask_csv, write_qb_video_fixture)


def _schema(data):
    return CsvSchema(categorical=data.cat_fields, sequence=dict(zip(data.seq_fields, data.seq_lengths)),
                     labels=data.tasks, user="user_id",
                     shared_vocab={"item_id": "item", "click": "item", "like": "item", "share": "item"})


@pytest.fixture(scope="module")
def tiny():
    return synthetic_three_task(n_samples=300, n_users=30, n_items=50, num_fields=6, seq_len=5, seed=3)


def test_csv_round_trip(tiny, tmp_path):
    write_multitask_csv(tiny, tmp_path)
    back = read_multitask_csv(tmp_path, _schema(tiny))
    tokens = back.meta["vocab_tokens"]
    for split in ("train", "valid", "test"):
        a, b = tiny.split(split), back.split(split)
        assert torch.equal(a.labels, b.labels)
        for j, vocab in enumerate(back.cat_vocab):
            decoded = [tokens[vocab][i] for i in b.cat[:, j].tolist()]
            if split == "train":  # every train token is in the vocabulary
                assert decoded == [str(i) for i in a.cat[:, j].tolist()]
            else:  # valid/test tokens are either the same token or OOV
                assert all(d == str(o) or i == 1 for d, o, i in zip(decoded, a.cat[:, j].tolist(), b.cat[:, j].tolist()))
        for j, vocab in enumerate(back.seq_vocab):
            assert torch.equal(a.seq[j] == 0, b.seq[j] == 0)  # same padding pattern
            if split == "train":
                got = [[tokens[vocab][i] for i in row if i] for row in b.seq[j].tolist()]
                assert got == [[str(i) for i in row if i] for row in a.seq[j].tolist()]
    # a shared vocabulary: the target item and the histories use the same ids
    assert back.cat_vocab[1] == back.seq_vocab[0] == "item"


def _write(path, text):
    path.write_text(text, encoding="utf-8")


def test_csv_wrong_field_count_names_file_and_line(tmp_path):
    schema = CsvSchema(categorical=["u", "i"], sequence={"h": 3}, labels=["click"])
    good = "u,i,h,click\n1,2,3^4,1\n"
    for s in ("valid", "test"):
        _write(tmp_path / f"{s}.csv", good)
    _write(tmp_path / "train.csv", good + "2,5,1\n1,2,,0\n")
    with pytest.raises(ValueError, match=r"train\.csv line 3: expected 4 fields"):
        read_multitask_csv(tmp_path, schema)


def test_csv_bad_label_names_line_and_column(tmp_path):
    schema = CsvSchema(categorical=["u", "i"], sequence={"h": 3}, labels=["click"])
    good = "u,i,h,click\n1,2,3^4,1\n"
    _write(tmp_path / "train.csv", good)
    _write(tmp_path / "valid.csv", good)
    _write(tmp_path / "test.csv", good + "1,2,,yes\n")
    with pytest.raises(ValueError, match=r"test\.csv line 3, column 'click': expected a 0/1 label, got 'yes'"):
        read_multitask_csv(tmp_path, schema)


def test_csv_missing_column_and_file(tmp_path):
    schema = CsvSchema(categorical=["u", "i"], sequence={}, labels=["click"])
    with pytest.raises(FileNotFoundError, match="train.csv"):
        read_multitask_csv(tmp_path, schema)
    for s in ("train", "valid", "test"):
        _write(tmp_path / f"{s}.csv", "u,click\n1,0\n")
    with pytest.raises(ValueError, match=r"train\.csv line 1 \(header\): missing column\(s\) \['i'\]"):
        read_multitask_csv(tmp_path, schema)


def test_csv_sequences_truncate_to_most_recent_and_unknown_is_oov(tmp_path):
    schema = CsvSchema(categorical=["u"], sequence={"h": 2}, labels=["y"])
    _write(tmp_path / "train.csv", "u,h,y\na,x^y^z,1\nb,,0\n")
    _write(tmp_path / "valid.csv", "u,h,y\nc,y^q,0\n")
    _write(tmp_path / "test.csv", "u,h,y\na,z,1\n")
    d = read_multitask_csv(tmp_path, schema)
    toks = d.meta["vocab_tokens"]["h"]
    assert [toks[i] for i in d.train.seq[0][0].tolist()] == ["y", "z"]
    assert d.train.seq[0][1].tolist() == [0, 0]
    assert d.valid.seq[0][0].tolist() == [toks.index("y"), 1]      # q is out of vocabulary
    assert d.valid.cat[0, 0].item() == 1                           # user c unseen in train
    assert d.test.seq[0][0].tolist() == [0, toks.index("z")]


def test_history_sequences_hand_example():
    users = np.array([0, 0, 0, 0, 1, 1])
    items = np.array([5, 6, 7, 8, 9, 10])
    pos = np.array([1, 0, 1, 1, 1, 1], bool)
    h = history_sequences(users, items, pos, 2)
    assert h.tolist() == [[0, 0], [0, 5], [0, 5], [5, 7], [0, 0], [0, 9]]


def test_chronological_split_per_user():
    users = np.array([0] * 10 + [1] * 5)
    part = chronological_split(users, (0.8, 0.1, 0.1))
    assert part[:10].tolist() == [0] * 8 + [1] + [2]
    assert part[10:].tolist() == [0] * 4 + [2]


def test_kuairand_and_qb_video_fixtures(tmp_path):
    d = load_kuairand_pure(write_kuairand_fixture(tmp_path / "kr"), max_len=4)
    assert d.tasks == ["click", "like", "long_view"]
    assert d.seq_fields == ["hist_click", "hist_like", "hist_long_view"]
    assert len(d.train) + len(d.valid) + len(d.test) == 600
    assert "author_id" in d.cat_fields and "user_active_degree" in d.cat_fields
    q = load_qb_video(write_qb_video_fixture(tmp_path / "qb"), max_len=3)
    assert q.tasks == ["click", "like", "follow", "share"] and "watching_times" not in q.cat_fields
    with pytest.raises(FileNotFoundError, match="kuairand.com"):
        load_kuairand_pure(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="QB-video.csv"):
        load_qb_video(tmp_path / "nothing")


def test_fetch_kuairand_unpacks_a_local_archive(tmp_path):
    import tarfile

    from recsys.multitask.data import fetch_kuairand_pure

    src = write_kuairand_fixture(tmp_path / "src" / "KuaiRand-Pure" / "data", n_rows=60)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "KuaiRand-Pure.tar.gz", "w:gz") as tar:  # an archive already downloaded
        tar.add(src.parent, arcname="KuaiRand-Pure")
    data_dir = fetch_kuairand_pure(root, show_progress=False)
    assert data_dir == root / "KuaiRand-Pure" / "data"
    assert len(load_kuairand_pure(data_dir).tasks) == 3


def test_ml100k_multitask_from_fixture_files(tmp_path):
    import pandas as pd

    from recsys.multitask.data import load_ml100k_multitask, write_ml100k_fixture

    root = write_ml100k_fixture(tmp_path / "ml", n_users=10, n_items=25, n_ratings=120)
    d = load_ml100k_multitask(max_len=3, negatives=1, seed=0, directory=root)
    assert d.tasks == ["watch", "like", "dislike"]
    assert d.seq_fields == ["hist_like", "hist_neutral", "hist_dislike", "item_genres"]
    n = sum(len(d.split(s)) for s in ("train", "valid", "test"))
    assert n == 240                                               # every rating + one sampled negative
    inter = pd.read_csv(root / "ml-100k.inter", sep="\t", dtype=str)
    rated = {(u, i): float(r) for u, i, r in zip(inter["user_id:token"], inter["item_id:token"], inter["rating:float"])}
    tok = d.meta["vocab_tokens"]
    ui, ii = d.cat_fields.index("user_id"), d.cat_fields.index("item_id")
    for s in ("train", "valid", "test"):
        sp = d.split(s)
        for r in range(len(sp)):
            key = (tok["user_id"][int(sp.cat[r, ui])], tok["item"][int(sp.cat[r, ii])])
            watch, like, dislike = sp.labels[r].tolist()
            rating = rated.get(key, 0.0)
            assert watch == (key in rated)                          # negatives are unrated items
            assert like == (rating >= 4) and dislike == (0 < rating <= 2)
            for j, field in enumerate(("hist_like", "hist_neutral", "hist_dislike")):
                for item in sp.seq[j][r].tolist():
                    if item:
                        h = rated[(key[0], tok["item"][item])]      # a history item was rated by this user
                        assert (h >= 4) if field == "hist_like" else (h == 3) if field == "hist_neutral" else (h <= 2)
