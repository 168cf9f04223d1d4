import pytest

from graphattn import registry


@pytest.fixture(autouse=True)
def scratch():
    with registry._scratch(empty=True):  # real models (KGAT, ml-100k, ...) may already be registered
        yield


def _task(name, tmp_path, path_loader_ok=False):
    registry.register_task(name, task=type("T", (), {}), overall=tmp_path / "o.yaml", model_dir=tmp_path, path_loader_ok=path_loader_ok)


def test_register_model_sets_attributes_and_lists_by_task(tmp_path):
    @registry.register_model("RegA", task="t_reg1")
    class A:
        pass

    @registry.register_model("RegB", task="t_reg2")
    class B:
        pass

    assert (A.model_name, A.task) == ("RegA", "t_reg1")
    assert registry.get_model("RegA") is A
    assert "RegA" in registry.list_models() and "RegB" in registry.list_models()
    assert registry.list_models("t_reg1") == ["RegA"]
    assert registry.list_models("t_reg2") == ["RegB"]


def test_duplicate_model_name_is_an_error_but_same_class_again_is_not():
    @registry.register_model("RegDup", task="t")
    class First:
        pass

    registry.register_model("RegDup", task="t")(First)  # the very same class: allowed
    with pytest.raises(ValueError, match=r"model 'RegDup' is already registered by .*First"):

        @registry.register_model("RegDup", task="t")
        class Second:
            pass

    assert registry.get_model("RegDup") is First


def test_unknown_model_suggests_closest_and_lists_all():
    for name in ("KGAT", "BPRMF", "CKE"):
        registry.register_model(name, task="t")(type(name, (), {}))
    with pytest.raises(ValueError) as info:
        registry.get_model("KGTA")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("Unknown model 'KGTA'. Did you mean: KGAT? Available: ")
    assert message.endswith("BPRMF, CKE, KGAT") or "BPRMF, CKE, KGAT" in message
    # case-insensitive closeness
    with pytest.raises(ValueError, match="Did you mean: KGAT"):
        registry.get_model("kgat")
    # nothing close: no suggestion, still the list
    with pytest.raises(ValueError) as info:
        registry.get_model("Zzzzzz")
    assert "Did you mean" not in str(info.value) and "KGAT" in str(info.value)


def test_register_model_rejects_non_class():
    with pytest.raises(TypeError, match="decorates a class"):
        registry.register_model("RegFn", task="t")(lambda: None)


def test_datasets_register_list_and_duplicate(tmp_path):
    _task("t_ds", tmp_path)
    _task("t_other", tmp_path)
    loader = lambda config: None  # noqa: E731
    registry.register_dataset("ds-one", task="t_ds", loader=loader, description="first")
    registry.register_dataset("ds-two", task=("t_ds", "t_other"), loader=loader)
    registry.register_dataset("ds-one", task="t_ds", loader=loader, description="first")  # identical: no-op
    assert registry.list_datasets("t_ds") == ["ds-one", "ds-two"]
    assert registry.list_datasets("t_other") == ["ds-two"]
    entry = registry.get_dataset("ds-one", "t_ds")
    assert (entry.name, entry.tasks, entry.loader, entry.description, entry.is_path) == ("ds-one", ("t_ds",), loader, "first", False)
    with pytest.raises(ValueError, match="dataset 'ds-one' is already registered"):
        registry.register_dataset("ds-one", task="t_ds", loader=lambda config: 1)
    with pytest.raises(ValueError, match=r"registered for task\(s\) t_ds, not 't_other'"):
        registry.get_dataset("ds-one", "t_other")


def test_unknown_dataset_and_directory_paths(tmp_path):
    _task("t_paths", tmp_path, path_loader_ok=True)
    _task("t_nopaths", tmp_path, path_loader_ok=False)
    registry.register_dataset("ml-100k", task=("t_paths", "t_nopaths"), loader=lambda c: None)

    with pytest.raises(ValueError) as info:
        registry.get_dataset("ml-10k", "t_paths")
    message = str(info.value)
    assert message.startswith("Unknown dataset 'ml-10k'. Did you mean: ml-100k? Available: ml-100k or a directory path")

    entry = registry.get_dataset(str(tmp_path), "t_paths")
    assert entry.is_path and entry.name == str(tmp_path) and entry.loader is None and entry.tasks == ("t_paths",)

    with pytest.raises(ValueError) as info:
        registry.get_dataset(str(tmp_path), "t_nopaths")
    assert "directory path" not in str(info.value)

    with pytest.raises(ValueError, match="is not an existing directory"):
        registry.get_dataset(str(tmp_path / "missing"), "t_paths")


def test_tasks_register_and_duplicate(tmp_path):
    class DupTask:
        pass

    registry.register_task("t_dup", task=DupTask, overall=tmp_path / "o.yaml", model_dir=tmp_path)
    registry.register_task("t_dup", task=DupTask, overall=tmp_path / "o.yaml", model_dir=tmp_path)  # identical
    assert registry.get_task("t_dup").task is DupTask
    assert "t_dup" in registry.list_tasks()
    with pytest.raises(ValueError, match="task 't_dup' is already registered"):
        registry.register_task("t_dup", task=type("T", (), {}), overall=tmp_path / "o.yaml", model_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown task 't_dupe'. Did you mean: t_dup?"):
        registry.get_task("t_dupe")
    with pytest.raises(TypeError, match="Task class"):
        registry.register_task("t_bad", task=None, overall=tmp_path, model_dir=tmp_path)


def test_scratch_forgets_registrations():
    registry.register_model("RegOuter", task="t")(type("RegOuter", (), {}))
    with registry._scratch(empty=True):
        assert registry.list_models() == []
        registry.register_model("RegTemp", task="t")(type("RegTemp", (), {}))
        assert "RegTemp" in registry.list_models()
    assert "RegTemp" not in registry.list_models() and "RegOuter" in registry.list_models()
    registry.register_model("RegTemp2", task="t")(type("RegTemp2", (), {}))
    registry._unregister("model", "RegTemp2")
    assert "RegTemp2" not in registry.list_models()


# ------------------------------------------------------------------ exact messages, type checks and defaults


def test_registration_type_errors_have_exact_messages(tmp_path):
    with pytest.raises(TypeError, match=r"^task name must be a non-empty str, got ''$"):
        registry.register_task("", task=type("T", (), {}), overall=tmp_path, model_dir=tmp_path)
    with pytest.raises(TypeError, match=r"^task name must be a non-empty str, got 3$"):
        registry.register_task(3, task=type("T", (), {}), overall=tmp_path, model_dir=tmp_path)
    with pytest.raises(TypeError, match=r"^task 't_x' must be registered with a Task class, got NoneType$"):
        registry.register_task("t_x", task=None, overall=tmp_path, model_dir=tmp_path)
    with pytest.raises(TypeError, match=r"^model name must be a non-empty str, got ''$"):
        registry.register_model("", task="t")
    with pytest.raises(TypeError, match=r"^model name must be a non-empty str, got None$"):
        registry.register_model(None, task="t")
    with pytest.raises(TypeError, match=r"^task of model 'M' must be a non-empty str, got ''$"):
        registry.register_model("M", task="")
    with pytest.raises(TypeError, match=r"^task of model 'M' must be a non-empty str, got 1$"):
        registry.register_model("M", task=1)
    with pytest.raises(TypeError, match=r"^register_model\('RegFn'\) decorates a class, got function$"):
        registry.register_model("RegFn", task="t")(lambda: None)
    loader = lambda c: None  # noqa: E731
    with pytest.raises(TypeError, match=r"^dataset name must be a non-empty str, got ''$"):
        registry.register_dataset("", task="t", loader=loader)
    with pytest.raises(TypeError, match=r"^dataset name must be a non-empty str, got 5$"):
        registry.register_dataset(5, task="t", loader=loader)
    with pytest.raises(TypeError, match=r"^task of dataset 'd' must be a str or a tuple of str, got \(\)$"):
        registry.register_dataset("d", task=(), loader=loader)
    with pytest.raises(TypeError, match=r"^task of dataset 'd' must be a str or a tuple of str, got \('a', ''\)$"):
        registry.register_dataset("d", task=("a", ""), loader=loader)
    with pytest.raises(TypeError, match=r"^task of dataset 'd' must be a str or a tuple of str, got \('a', 2\)$"):
        registry.register_dataset("d", task=("a", 2), loader=loader)
    with pytest.raises(TypeError, match=r"^task of dataset 'd' must be a str or a tuple of str, got ''$"):
        registry.register_dataset("d", task="", loader=loader)
    with pytest.raises(TypeError, match=r"^loader of dataset 'd' must be callable, got int$"):
        registry.register_dataset("d", task="t", loader=3)
    with pytest.raises(TypeError, match=r"^dataset must be a non-empty str, got ''$"):
        registry.get_dataset("")
    with pytest.raises(TypeError, match=r"^dataset must be a non-empty str, got None$"):
        registry.get_dataset(None)
    assert registry.list_models() == [] and registry.list_datasets() == [] and registry.list_tasks() == []


def test_task_entry_fields_and_defaults(tmp_path):
    cls = type("T", (), {})
    registry.register_task("t_fields", task=cls, overall=str(tmp_path / "o.yaml"), model_dir=str(tmp_path))
    entry = registry.get_task("t_fields")
    assert entry == registry.TaskEntry("t_fields", cls, tmp_path / "o.yaml", tmp_path, None, False)
    assert isinstance(entry.overall, type(tmp_path)) and isinstance(entry.model_dir, type(tmp_path))
    registry.register_task("t_fields2", task=cls, overall=tmp_path, model_dir=tmp_path, dataset_dir=str(tmp_path),
                           path_loader_ok=1)
    entry = registry.get_task("t_fields2")
    assert entry.dataset_dir == tmp_path and isinstance(entry.dataset_dir, type(tmp_path))
    assert entry.path_loader_ok is True
    with pytest.raises(ValueError, match=r"^task 't_fields' is already registered \(\S*test_registry\.T\)$"):
        registry.register_task("t_fields", task=cls, overall=tmp_path, model_dir=tmp_path)
    assert registry.list_tasks() == ["t_fields", "t_fields2"]


def test_task_registration_without_tasks_lists_none(tmp_path):
    with pytest.raises(ValueError, match=r"^Unknown task 'x'\. Available: none registered$"):
        registry.get_task("x")
    with pytest.raises(ValueError, match=r"^Unknown model 'x'\. Available: none registered$"):
        registry.get_model("x")


def test_unknown_names_list_up_to_three_suggestions_sorted_listing():
    for name in ("abcd", "abce", "abcf", "abcg", "zz"):
        registry.register_model(name, task="t")(type(name, (), {}))
    message = str(pytest.raises(ValueError, registry.get_model, "abcx").value)
    assert message.startswith("Unknown model 'abcx'. Did you mean: ")
    suggested = message.split("Did you mean: ")[1].split("?")[0].split(", ")
    assert len(suggested) == 3 and set(suggested) <= {"abcd", "abce", "abcf", "abcg"}
    assert message.endswith("? Available: abcd, abce, abcf, abcg, zz")
    # a suggestion keeps the registered spelling
    registry.register_model("KGAT", task="t")(type("KGAT", (), {}))
    assert "Did you mean: KGAT?" in str(pytest.raises(ValueError, registry.get_model, "kgat").value)
    # a name only 50 % alike is not suggested (cutoff 0.6)
    assert "Did you mean" not in str(pytest.raises(ValueError, registry.get_model, "abxy").value)


def test_register_model_sets_the_task_and_returns_the_class():
    class M:
        pass

    assert registry.register_model("M1", task="t_a")(M) is M
    assert (M.model_name, M.task) == ("M1", "t_a")
    assert registry.list_models("t_b") == [] and registry.list_models(None) == ["M1"]
    with pytest.raises(ValueError, match=r"^model 'M1' is already registered by \S*test_registry\.\S*\.M; cannot register "
                                         r"test_registry\.N under the same name$"):
        registry.register_model("M1", task="t_a")(type("N", (), {"__module__": "test_registry"}))


def test_dataset_entry_defaults_and_listing(tmp_path):
    _task("t_a", tmp_path)
    _task("t_b", tmp_path)
    loader = lambda c: None  # noqa: E731
    registry.register_dataset("b-set", task="t_b", loader=loader)
    registry.register_dataset("a-set", task=["t_a", "t_b"], loader=loader)
    entry = registry.get_dataset("b-set")
    assert entry == registry.DatasetEntry("b-set", ("t_b",), loader, "", False)
    assert registry.get_dataset("a-set").tasks == ("t_a", "t_b")
    assert registry.list_datasets() == ["a-set", "b-set"] and registry.list_datasets("t_a") == ["a-set"]
    with pytest.raises(ValueError, match=r"^dataset 'b-set' is already registered \(tasks t_b\)$"):
        registry.register_dataset("b-set", task=("t_b", "t_a"), loader=loader)
    with pytest.raises(ValueError, match=r"^Dataset 'b-set' is registered for task\(s\) t_b, not 't_a'\. "
                                         r"Datasets for 't_a': a-set$"):
        registry.get_dataset("b-set", "t_a")
    _task("t_c", tmp_path)
    with pytest.raises(ValueError, match=r"Datasets for 't_c': none registered$"):
        registry.get_dataset("b-set", "t_c")


def test_directory_datasets_without_a_task_and_messages(tmp_path, monkeypatch):
    entry = registry.get_dataset(str(tmp_path))
    assert entry == registry.DatasetEntry(str(tmp_path), (), None, f"directory {tmp_path}", True)
    _task("t_np", tmp_path)
    _task("t_p", tmp_path, path_loader_ok=True)
    registry.register_dataset("ml-1m", task="t_np", loader=lambda c: None)
    # a registered name wins over a directory of the same name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ml-1m").mkdir()
    assert registry.get_dataset("ml-1m").is_path is False
    entry = registry.get_dataset(str(tmp_path / "ml-1m"), "t_p")
    assert entry.is_path and entry.description == f"directory {tmp_path / 'ml-1m'}"
    with pytest.raises(ValueError, match=r"^Unknown dataset 'nope'\. Available: none registered or a directory path$"):
        registry.get_dataset("nope", "t_p")
    with pytest.raises(ValueError, match=r"^Unknown dataset 'a/b'\. Available: ml-1m or a directory path "
                                         r"\('a/b' is not an existing directory\)$"):
        registry.get_dataset("a/b")
    with pytest.raises(ValueError, match=r"^Unknown dataset 'a/b'\. Available: ml-1m$"):
        registry.get_dataset("a/b", "t_np")


def test_scratch_without_empty_keeps_and_restores(tmp_path):
    registry.register_model("Keep", task="t")(type("Keep", (), {}))
    with registry._scratch():
        assert registry.list_models() == ["Keep"]
        registry._unregister("model", "Keep")
        assert registry.list_models() == []
    assert registry.list_models() == ["Keep"]
    _task("t_s", tmp_path)
    registry.register_dataset("d_s", task="t_s", loader=lambda c: None)
    registry._unregister("task", "t_s")
    registry._unregister("dataset", "d_s")
    registry._unregister("dataset", "never-registered")
    assert registry.list_tasks() == [] and registry.list_datasets() == []
    with pytest.raises(ValueError, match=r"^kind must be 'task', 'model' or 'dataset', got 'models'$"):
        registry._unregister("models", "Keep")


def test_scratch_restores_after_an_error():
    with pytest.raises(RuntimeError):
        with registry._scratch(empty=True):
            registry.register_model("Gone", task="t")(type("Gone", (), {}))
            raise RuntimeError
    assert "Gone" not in registry.list_models()


def test_messages_list_several_tasks_and_datasets(tmp_path):
    for t in ("t_a", "t_b", "t_c"):
        _task(t, tmp_path)
    loader = lambda c: None  # noqa: E731
    registry.register_dataset("both", task=("t_a", "t_b"), loader=loader)
    registry.register_dataset("c1", task="t_c", loader=loader)
    registry.register_dataset("c2", task="t_c", loader=loader)
    with pytest.raises(ValueError, match=r"^Dataset 'both' is registered for task\(s\) t_a, t_b, not 't_c'\. "
                                         r"Datasets for 't_c': c1, c2$"):
        registry.get_dataset("both", "t_c")
    with pytest.raises(ValueError, match=r"^dataset 'both' is already registered \(tasks t_a, t_b\)$"):
        registry.register_dataset("both", task="t_a", loader=loader)
    with pytest.raises(TypeError, match=r"^task 't_x' must be registered with a Task class, got int$"):
        registry.register_task("t_x", task=3, overall=tmp_path, model_dir=tmp_path)
