"""Config precedence for every pair of layers and every kind of value: the later layer wins and is the
recorded source (RecBole's layers: task overall < model < dataset < files in order < command line)."""
import itertools

import pytest
import yaml

from graphattn.config import Config

LAYERS = ["overall", "model", "dataset", "file1", "file2", "cli"]
KINDS = {
    "scalar": (3, 7),
    "list": ([1, 2], [5]),
    "dict": ({"a": 1}, {"b": {"c": 2}}),
    "null": ("a", None),          # a later null replaces a value (the key's default is null, so it is nullable)
    "from_null": (None, "b"),     # and a value replaces an earlier null
}


def _build(toy_task, tmp_path, key, values, kind):
    """Write each layer's YAML with ``values[layer]`` for ``key`` (absent layers say nothing) and build."""
    overall = yaml.safe_load(toy_task.overall.read_text())
    default = values.get("overall", None if kind in ("null", "from_null") else KINDS[kind][0])
    overall[key] = default
    toy_task.overall.write_text(yaml.safe_dump(overall))
    for layer, path in (("model", toy_task.root / "model" / f"{toy_task.model}.yaml"),
                        ("dataset", toy_task.root / "dataset" / f"{toy_task.dataset}.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        data.pop(key, None)
        if layer in values:
            data[key] = values[layer]
        path.write_text(yaml.safe_dump(data))
    files = []
    for layer in ("file1", "file2"):
        path = tmp_path / f"{layer}.yaml"
        path.write_text(yaml.safe_dump({key: values[layer]} if layer in values else {}))
        files.append(path)
    cli = {key: values["cli"]} if "cli" in values else None
    return Config(toy_task.model, toy_task.dataset, files, cli), files


def _source_name(layer, toy_task, files):
    return {"overall": str(toy_task.overall), "model": str(toy_task.root / "model" / f"{toy_task.model}.yaml"),
            "dataset": str(toy_task.root / "dataset" / f"{toy_task.dataset}.yaml"), "file1": str(files[0]),
            "file2": str(files[1]), "cli": "command line"}[layer]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("earlier, later", list(itertools.combinations(LAYERS, 2)))
def test_a_later_layer_wins_for_every_kind_of_value(toy_task, tmp_path, earlier, later, kind):
    first, second = KINDS[kind]
    if kind == "null" and earlier == "overall" and later in ("file1", "file2", "cli"):
        # a key whose default is a value is not nullable: a file or the command line cannot null it
        with pytest.raises(TypeError, match="config key 'probe_key' in .*: expected str .*got null"):
            _build(toy_task, tmp_path, "probe_key", {earlier: first, later: second}, kind)
        return
    cfg, files = _build(toy_task, tmp_path, "probe_key", {earlier: first, later: second}, kind)
    assert cfg["probe_key"] == second
    assert cfg.source("probe_key") == _source_name(later, toy_task, files)
    # and without the later layer, the earlier one is what remains
    cfg, files = _build(toy_task, tmp_path, "probe_key", {earlier: first}, kind)
    assert cfg["probe_key"] == first
    assert cfg.source("probe_key") == _source_name(earlier, toy_task, files)


def test_a_later_layer_replaces_a_dict_whole_rather_than_merging(toy_task, tmp_path):
    cfg, _ = _build(toy_task, tmp_path, "probe_key", {"model": {"a": 1, "b": 2}, "cli": {"b": 3}}, "dict")
    assert cfg["probe_key"] == {"b": 3}
