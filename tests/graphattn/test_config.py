import re

import pytest
import yaml

from graphattn.config import CORE_OVERALL, Config, load_yaml, parse_cli_overrides


def _write(path, text):
    path.write_text(text)
    return path


def test_core_overall_keys_and_comments():
    text = CORE_OVERALL.read_text()
    data = load_yaml(CORE_OVERALL)
    expected = {
        "seed": 2019, "reproducibility": True, "device": "auto", "epochs": 1000, "learning_rate": 0.001,
        "weight_decay": 0.0, "train_batch_size": 1024, "eval_batch_size": 4096, "eval_step": 1,
        "stopping_step": 10, "best_on_tie": "first", "checkpoint_dir": "saved", "show_progress": True, "resume": None,
        "log_level": "INFO", "num_threads": 0, "optimizer": "adam", "momentum": 0.9, "scheduler": "none",
        "warmup_epochs": 0, "grad_clip": 0.0, "log_tensorboard": False,
    }
    assert data == expected
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert "# (" in line, f"key without a '# (type) meaning' comment: {line}"


def test_precedence_of_every_layer(toy_task, tmp_path):
    # drop layers from the top, one at a time, and watch 'level' fall back
    f1 = _write(tmp_path / "one.yaml", "level: file1\n")
    f2 = _write(tmp_path / "two.yaml", "level: file2\ndropout: 0.1\n")
    cfg = Config(toy_task.model, toy_task.dataset, [f1, f2], {"level": "cli"})
    assert cfg["level"] == "cli" and cfg.source("level") == "command line"
    assert Config(toy_task.model, toy_task.dataset, [f1, f2])["level"] == "file2"
    assert Config(toy_task.model, toy_task.dataset, [f2, f1])["level"] == "file1"
    cfg = Config(toy_task.model, toy_task.dataset, [f1])
    assert cfg["level"] == "file1" and cfg.source("level") == str(f1)
    cfg = Config(toy_task.model, toy_task.dataset)
    assert cfg["level"] == "dataset" and cfg.source("level").endswith(f"{toy_task.dataset}.yaml")
    (toy_task.root / "dataset" / f"{toy_task.dataset}.yaml").unlink()
    cfg = Config(toy_task.model, toy_task.dataset)
    assert cfg["level"] == "model" and cfg["hidden_size"] == 16
    (toy_task.root / "model" / f"{toy_task.model}.yaml").unlink()
    cfg = Config(toy_task.model, toy_task.dataset)
    assert cfg["level"] == "task" and cfg["hidden_size"] == 8
    # the task's overall overrides the core overall; untouched core keys keep their source
    assert cfg["learning_rate"] == 0.01 and cfg.source("learning_rate") == str(toy_task.overall)
    assert cfg["seed"] == 2019 and cfg.source("seed") == str(CORE_OVERALL)
    assert (cfg["model"], cfg["dataset"], cfg.task) == (toy_task.model, toy_task.dataset, toy_task.task)
    # a file sets other keys too
    assert Config(toy_task.model, toy_task.dataset, [f2])["dropout"] == 0.1


def test_dataset_yaml_is_skipped_for_directory_paths(toy_task, tmp_path):
    cfg = Config(toy_task.model, str(tmp_path))
    assert cfg["level"] == "model" and cfg["dataset"] == str(tmp_path)


def test_unknown_key_names_file_and_suggests(toy_task, tmp_path):
    bad = _write(tmp_path / "my.yaml", "learning_rat: 0.1\n")
    with pytest.raises(ValueError) as info:
        Config(toy_task.model, toy_task.dataset, [bad])
    assert str(info.value) == f"unknown config key 'learning_rat' in {bad}; did you mean 'learning_rate'?"
    with pytest.raises(ValueError, match="unknown config key 'hiden_size' in command line; did you mean 'hidden_size'"):
        Config(toy_task.model, toy_task.dataset, config_dict={"hiden_size": 3})
    with pytest.raises(ValueError, match="unknown config key 'qqqq' in command line; every key needs a default"):
        Config(toy_task.model, toy_task.dataset, config_dict={"qqqq": 3})


def test_wrong_type_names_key_file_expected_and_got(toy_task, tmp_path):
    bad = _write(tmp_path / "types.yaml", "epochs: ten\n")
    with pytest.raises(TypeError) as info:
        Config(toy_task.model, toy_task.dataset, [bad])
    message = str(info.value)
    assert "'epochs'" in message and str(bad) in message and "expected int" in message and "got str 'ten'" in message
    with pytest.raises(TypeError, match="'topk' in command line: expected list.*got int 10"):
        Config(toy_task.model, toy_task.dataset, config_dict={"topk": 10})
    with pytest.raises(TypeError, match="'level' in command line: expected str"):
        Config(toy_task.model, toy_task.dataset, config_dict={"level": 3})
    with pytest.raises(TypeError, match="'epochs' in command line: expected int.*got float 1.5"):
        Config(toy_task.model, toy_task.dataset, config_dict={"epochs": 1.5})
    with pytest.raises(TypeError, match="'epochs' in command line: expected int.*got null"):
        Config(toy_task.model, toy_task.dataset, config_dict={"epochs": None})


def test_bool_is_not_int_but_int_is_float(toy_task):
    with pytest.raises(TypeError, match="'epochs'.*expected int.*got bool True"):
        Config(toy_task.model, toy_task.dataset, config_dict={"epochs": True})
    with pytest.raises(TypeError, match="'dropout'.*expected float.*got bool"):
        Config(toy_task.model, toy_task.dataset, config_dict={"dropout": False})
    with pytest.raises(TypeError, match="'use_bias'.*expected bool.*got int 1"):
        Config(toy_task.model, toy_task.dataset, config_dict={"use_bias": 1})
    cfg = Config(toy_task.model, toy_task.dataset, config_dict={"dropout": 1, "learning_rate": 2})
    assert cfg["dropout"] == 1.0 and type(cfg["dropout"]) is float
    assert type(cfg["learning_rate"]) is float


def test_null_default_accepts_anything(toy_task):
    cfg = Config(toy_task.model, toy_task.dataset, config_dict={"pretrained": "weights/x.pt", "resume": "saved/run"})
    assert cfg["pretrained"] == "weights/x.pt" and cfg["resume"] == "saved/run"
    assert Config(toy_task.model, toy_task.dataset, config_dict={"pretrained": [1, 2]})["pretrained"] == [1, 2]


def test_type_clash_between_default_layers_is_reported(toy_task):
    (toy_task.root / "model" / f"{toy_task.model}.yaml").write_text("hidden_size: big\n")
    with pytest.raises(TypeError, match=rf"'hidden_size' in .*{toy_task.model}.yaml: expected int"):
        Config(toy_task.model, toy_task.dataset)


def test_yaml_errors_name_the_file(toy_task, tmp_path):
    broken = _write(tmp_path / "broken.yaml", "a: [1, 2\n")
    with pytest.raises(ValueError, match=rf"{broken}: invalid YAML"):
        Config(toy_task.model, toy_task.dataset, [broken])
    listy = _write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ValueError, match=rf"{listy}: expected a mapping.*got list"):
        Config(toy_task.model, toy_task.dataset, [listy])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        Config(toy_task.model, toy_task.dataset, [tmp_path / "missing.yaml"])
    empty = _write(tmp_path / "empty.yaml", "# nothing\n")
    assert Config(toy_task.model, toy_task.dataset, [empty])["level"] == "dataset"


def test_yaml_exponent_floats_are_floats(toy_task, tmp_path):
    f = _write(tmp_path / "exp.yaml", "learning_rate: 1e-3\nweight_decay: 5E-5\n")
    cfg = Config(toy_task.model, toy_task.dataset, [f])
    assert cfg["learning_rate"] == pytest.approx(1e-3) and cfg["weight_decay"] == pytest.approx(5e-5)
    # PyYAML's own loader is untouched
    assert yaml.safe_load("x: 1e-3")["x"] == "1e-3"


def test_model_and_dataset_keys_in_files_must_agree(toy_task, tmp_path):
    ok = _write(tmp_path / "ok.yaml", f"model: {toy_task.model}\n")
    Config(toy_task.model, toy_task.dataset, [ok])
    clash = _write(tmp_path / "clash.yaml", "model: Other\n")
    with pytest.raises(ValueError, match=r"'model: Other' in .*clash.yaml conflicts"):
        Config(toy_task.model, toy_task.dataset, [clash])


def test_unknown_model_in_config():
    with pytest.raises(ValueError, match="Unknown model 'NoSuchModelXYZ'"):
        Config("NoSuchModelXYZ", "x")


def test_mapping_api_and_assignment(toy_task):
    cfg = Config(toy_task.model, toy_task.dataset)
    assert "seed" in cfg and "model" in cfg and "nope" not in cfg
    assert cfg.get("nope", 7) == 7 and cfg.get("seed") == 2019
    with pytest.raises(KeyError, match="did you mean 'seed'"):
        cfg["sed"]
    cfg["epochs"] = 3
    assert cfg["epochs"] == 3 and cfg.source("epochs") == "assignment"
    with pytest.raises(TypeError, match="'epochs' in assignment"):
        cfg["epochs"] = "3"
    with pytest.raises(ValueError, match="unknown config key 'epoch' in assignment; did you mean 'epochs'"):
        cfg["epoch"] = 3
    with pytest.raises(ValueError, match="fixed"):
        cfg["model"] = "Other"
    d = cfg.to_dict()
    assert list(d)[:2] == ["model", "dataset"] and d["topk"] == [10, 20]
    assert len(cfg) == len(list(cfg)) == len(d) > 2    # model and dataset are counted with the other keys
    d["topk"].append(99)
    assert cfg["topk"] == [10, 20]  # to_dict is a copy
    text = str(cfg)
    assert f"# from {CORE_OVERALL}" in text and "seed: 2019" in text and "topk: [10, 20]" in text
    assert "epochs: 3" in text.split("# set by assignment")[1]


def test_save_and_reload(toy_task, tmp_path):
    f = _write(tmp_path / "one.yaml", "level: file1\ntopk: [5]\n")
    cfg = Config(toy_task.model, toy_task.dataset, [f], {"learning_rate": 0.5, "pretrained": "p.pt"})
    out = cfg.save(tmp_path / "out" / "config.yaml")
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temp file left behind
    again = Config.load(out)
    assert again.to_dict() == cfg.to_dict()
    assert again.source("level") == str(out)
    raw = yaml.safe_load(out.read_text())
    assert raw["model"] == toy_task.model and raw["learning_rate"] == 0.5


def test_parse_cli_overrides():
    argv = ["--learning_rate=1e-3", "--topk=[10,20]", "--aggregator=bi", "--epochs", "5", "--seed", "-1",
            "--use_bias=false", "--resume=null", "--path=saved/x-1", "--name=True", "--mix={'a': 1}"]
    assert parse_cli_overrides(argv) == {
        "learning_rate": 1e-3, "topk": [10, 20], "aggregator": "bi", "epochs": 5, "seed": -1,
        "use_bias": False, "resume": None, "path": "saved/x-1", "name": True, "mix": {"a": 1},
    }
    assert parse_cli_overrides([]) == {}
    assert parse_cli_overrides(["--x=__import__('os')"]) == {"x": "__import__('os')"}  # never evaluated
    for bad, match in [
        (["positional"], "unexpected command-line argument 'positional'"),
        (["--epochs"], "--epochs has no value"),
        (["--epochs", "--seed=1"], "--epochs has no value"),
        (["--a-b=1"], "invalid config key 'a-b'"),
        (["--seed=1", "--seed=2"], "given twice"),
        (["--"], "unexpected command-line argument"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_cli_overrides(bad)


def test_cli_overrides_flow_into_config(toy_task):
    cfg = Config(toy_task.model, toy_task.dataset, config_dict=parse_cli_overrides(["--dropout=0", "--topk=[1]"]))
    assert cfg["dropout"] == 0.0 and cfg["topk"] == [1]


# ------------------------------------------------------------------ mutation-testing gaps (#22)

def _sections(text):
    """{section header: [key lines]} of str(config)."""
    out, current = {}, None
    for line in text.split("\n"):
        if line.startswith("# from ") or line.startswith("# set by "):
            current = line
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def test_str_lists_each_key_under_the_layer_it_came_from(toy_task):
    cfg = Config(toy_task.model, toy_task.dataset, config_dict={"level": "cli"})
    cfg["hidden_size"] = 4
    cfg["pretrained"] = {"a": [1, 2]}
    cfg["topk"] = list(range(40))
    text = str(cfg)
    lines = text.split("\n")
    assert lines[0] == f"# model: {toy_task.model}   dataset: {toy_task.dataset}   task: {toy_task.task}"
    sections = _sections(text)
    for header, body in sections.items():
        where = header.removeprefix("# from ").removeprefix("# set by ")
        keys = [line.split(":", 1)[0] for line in body]
        assert keys == sorted(k for k in cfg._values if cfg._sources[k] == where), header
    assert sections["# from command line"] == ["level: cli"]                # a string, without YAML's "..." end
    assert sections["# set by assignment"] == ["hidden_size: 4", "pretrained: {a: [1, 2]}",
                                               "topk: [" + ", ".join(map(str, range(40))) + "]"]
    assert len(lines) == 1 + sum(1 + len(b) for b in sections.values())


def test_format_value_keeps_long_values_on_one_line_up_to_10000_columns():
    from graphattn.config import _format_value
    assert _format_value("x") == "x" and _format_value(None) == "null" and _format_value(3) == "3"
    assert _format_value({"a": {"b": 1}}) == "{a: {b: 1}}"
    # pins the wrap width: the first break comes after column 10 000
    assert [len(line) for line in _format_value(["abc"] + [0] * 3400).split("\n")] == [10001, 205]
    assert _format_value(object()).startswith("<object object at ")


def test_load_applies_overrides_and_names_missing_keys(toy_task, tmp_path):
    out = Config(toy_task.model, toy_task.dataset).save(tmp_path / "config.yaml")
    again = Config.load(out, config_dict={"hidden_size": 5})
    assert again["hidden_size"] == 5 and again.source("hidden_size") == "command line"
    bare = _write(tmp_path / "bare.yaml", "hidden_size: 3\n")
    with pytest.raises(ValueError, match=r"^.*bare\.yaml: a saved config needs 'model' and 'dataset' keys; missing or "
                                         r"not a string: model, dataset$"):
        Config.load(bare)
    half = _write(tmp_path / "half.yaml", f"model: {toy_task.model}\ndataset: 3\n")
    with pytest.raises(ValueError, match=r"missing or not a string: dataset$"):
        Config.load(half)


def test_cli_values_yaml_spellings_and_equals_signs():
    got = parse_cli_overrides(["--a=true", "--b=false", "--c=~", "--d=null", "--e=x=y", "--f==", "--g", "5"])
    assert got == {"a": True, "b": False, "c": None, "d": None, "e": "x=y", "f": "=", "g": 5}
    assert got["a"] is True and got["b"] is False
    assert parse_cli_overrides(["--a", "TRUE"]) == {"a": "TRUE"}


def test_saved_file_keeps_the_key_order_flow_lists_and_unicode(toy_task, tmp_path):
    cfg = Config(toy_task.model, toy_task.dataset, config_dict={"level": "café"})
    out = cfg.save(tmp_path / "c.yaml")
    text = out.read_text(encoding="utf-8")
    assert text.startswith(f"# merged config of {toy_task.model} on {toy_task.dataset} (task {toy_task.task})\n"
                           f"model: {toy_task.model}\ndataset: {toy_task.dataset}\n")
    assert list(yaml.safe_load(text)) == list(cfg.to_dict())              # the config's order, not sorted
    assert "\ntopk: [10, 20]\n" in text and "\nlevel: café\n" in text


def test_missing_key_message_and_null_defaults_across_layers(toy_task):
    cfg = Config(toy_task.model, toy_task.dataset)
    with pytest.raises(KeyError, match=r"^\"no config key 'zzzzzz'\"$"):
        cfg["zzzzzz"]
    with pytest.raises(KeyError, match=r"^\"no config key 'sed'; did you mean 'seed'\?\"$"):
        cfg["sed"]
    # 'pretrained' is null in the task layer and a str in the model layer: str or null from then on
    model_yaml = toy_task.root / "model" / f"{toy_task.model}.yaml"
    model_yaml.write_text("level: model\nhidden_size: 16\npretrained: p.pt\ndropout: null\n")
    cfg = Config(toy_task.model, toy_task.dataset)
    with pytest.raises(TypeError, match=rf"^config key 'pretrained' in assignment: expected str \(the type of its "
                                        rf"default in {re.escape(str(model_yaml))}\), got int 3$"):
        cfg["pretrained"] = 3
    cfg = Config(toy_task.model, toy_task.dataset, config_dict={"pretrained": None, "dropout": None})
    assert cfg["pretrained"] is None and cfg["dropout"] is None
    cfg["pretrained"] = "q.pt"
    cfg["dropout"] = 0.25                                     # a float default made nullable later: both fine


def test_wrong_type_message_names_the_layer_of_the_default(toy_task):
    cfg = Config(toy_task.model, toy_task.dataset)
    model_yaml = toy_task.root / "model" / f"{toy_task.model}.yaml"
    with pytest.raises(TypeError, match=rf"^config key 'hidden_size' in assignment: expected int \(the type of its "
                                        rf"default in {re.escape(str(model_yaml))}\), got str 'x'$"):
        cfg["hidden_size"] = "x"
    # after overrides from a file and the command line, the message still names the default's file, not the
    # layer that set the value last
    override = toy_task.root / "override.yaml"
    override.write_text("hidden_size: 32\n")
    cfg = Config(toy_task.model, toy_task.dataset, config_files=[override], config_dict={"hidden_size": 48})
    assert cfg.source("hidden_size") == "command line"
    with pytest.raises(TypeError, match=rf"^config key 'hidden_size' in assignment: expected int \(the type of its "
                                        rf"default in {re.escape(str(model_yaml))}\), got str 'x'$"):
        cfg["hidden_size"] = "x"


def test_plain_dataset_names_and_required_default_layers(toy_task, monkeypatch):
    from graphattn import config as C
    assert C._is_plain_name("ml-100k") and C._is_plain_name("a.b")
    for name in (".", "..", "a/b", "/abs"):
        assert not C._is_plain_name(name), name
    with pytest.raises(TypeError, match=r"^dataset must be a non-empty str, got 3$"):
        Config(toy_task.model, 3)
    with pytest.raises(TypeError, match=r"^dataset must be a non-empty str, got ''$"):
        Config(toy_task.model, "")
    toy_task.overall.unlink()                                  # the task's overall.yaml is required
    with pytest.raises(FileNotFoundError, match=r"^config file '.*overall\.yaml' not found$"):
        Config(toy_task.model, toy_task.dataset)


def test_the_core_defaults_are_required(toy_task, monkeypatch, tmp_path):
    from graphattn import config as C
    monkeypatch.setattr(C, "CORE_OVERALL", tmp_path / "missing.yaml")
    with pytest.raises(FileNotFoundError, match=r"^config file '.*missing\.yaml' not found$"):
        Config(toy_task.model, toy_task.dataset)


def test_yaml_error_positions_and_errors_without_a_position(tmp_path, monkeypatch):
    bad = _write(tmp_path / "bad.yaml", "a: 1\nb: [1, 2\n")
    try:
        yaml.safe_load(bad.read_text())
    except yaml.YAMLError as exc:
        mark = exc.problem_mark
    with pytest.raises(ValueError, match=rf"^.*bad\.yaml: invalid YAML at line {mark.line + 1}, column "
                                         rf"{mark.column + 1}: "):
        load_yaml(bad)

    def no_mark(*a, **k):
        raise yaml.YAMLError("boom")
    monkeypatch.setattr(yaml, "load", no_mark)
    with pytest.raises(ValueError, match=r"^.*bad\.yaml: invalid YAML: boom$"):
        load_yaml(bad)


def test_a_task_without_a_dataset_folder(toy_task):
    from graphattn import registry
    with registry._scratch():
        registry.register_task("t_nodir", task=type("T", (), {}), overall=toy_task.overall,
                               model_dir=toy_task.root / "model")
        registry.register_model("M_nodir", task="t_nodir")(type("M_nodir", (), {}))
        cfg = Config("M_nodir", "anything")
        assert cfg["level"] == "task" and cfg.task == "t_nodir"


def test_yaml_error_message_ends_with_the_problem_not_the_context(tmp_path):
    # a flow list left open: str(exc) starts with the context ("while parsing a flow sequence"), the message must
    # carry the problem itself
    bad = _write(tmp_path / "open.yaml", "a: 1\nb: [1, 2\n")
    try:
        yaml.safe_load(bad.read_text())
    except yaml.YAMLError as exc:
        problem, first_line = exc.problem, str(exc).splitlines()[0]
    assert problem != first_line
    with pytest.raises(ValueError, match=rf": {re.escape(problem)}$"):
        load_yaml(bad)
