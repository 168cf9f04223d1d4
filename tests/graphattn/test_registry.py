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
