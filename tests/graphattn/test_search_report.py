"""graphattn.search's report without training: trials.md, best.yaml and study.json of a hand-made in-memory study
compared in full with expected text, and the plots (_plots, _save) checked one property at a time."""
from __future__ import annotations

import datetime
import json
import sys
import warnings

import matplotlib.pyplot as plt
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from graphattn import search
from graphattn.config import Config
from graphattn.search import load_search_space, report

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = "learning_rate: {loguniform: [0.001, 0.1]}\nhidden_size: {choice: [8, 16]}\ntopk: [{int: [5, 10]}, 20]\nepochs: 2\n"
DISTS = {"learning_rate": FloatDistribution(0.001, 0.1, log=True), "hidden_size": CategoricalDistribution([8, 16]),
         "topk[0]": IntDistribution(5, 10)}


def _setup(toy_task, tmp_path, text=SPACE):
    (tmp_path / "space.yaml").write_text(text)
    base = Config(toy_task.model, toy_task.dataset)
    return base, load_search_space(tmp_path / "space.yaml", base)


def _study(name="toy", direction="minimize"):
    return optuna.create_study(study_name=name, direction=direction)


def _complete(study, params, value, dists=DISTS, **attrs):
    study.add_trial(create_trial(params=params, distributions={k: dists[k] for k in params}, value=value,
                                 intermediate_values=attrs.pop("intermediate", {}), user_attrs=attrs))


def _full_study():
    study = _study()
    _complete(study, {"learning_rate": 0.0123456, "hidden_size": 16, "topk[0]": 7}, 0.25, intermediate={1: 0.5, 2: 0.25},
              run="run-a", epochs=2, test={"mse": 0.3, "mae": 0.4}, best_epoch=2)
    study.add_trial(create_trial(params={"learning_rate": 0.05, "hidden_size": 8, "topk[0]": 5}, distributions=DISTS,
                                 state=TrialState.PRUNED, intermediate_values={2: 0.875, 1: 0.9},
                                 user_attrs={"run": "run-b", "epochs": 2}))
    _complete(study, {"learning_rate": 0.002, "hidden_size": 8, "topk[0]": 10}, 0.125, intermediate={1: 0.2, 2: 0.125},
              run="run-c", epochs=2, test={"mse": 0.1500004})
    study.add_trial(create_trial(params={"learning_rate": 0.09}, distributions={"learning_rate": DISTS["learning_rate"]},
                                 state=TrialState.FAIL, user_attrs={"run": "run-d", "error": "no finite mse was measured"}))
    study.add_trial(create_trial(state=TrialState.PRUNED))          # pruned before any evaluation: no value at all
    study.add_trial(create_trial(state=TrialState.RUNNING))
    study.enqueue_trial({"learning_rate": 0.01})                    # a waiting trial is not listed
    return study


def _json(folder):
    text = (folder / "study.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2) + "\n"                # indented by 2, one trailing newline
    return data


def test_report_writes_the_whole_table_best_config_and_record(toy_task, tmp_path, monkeypatch):
    base, space = _setup(toy_task, tmp_path)
    monkeypatch.setattr(sys, "argv", ["run.py", "--storage", "postgresql://me:pw@db/optuna"])
    result = report(_full_study(), space, base, "mse", tmp_path, {"epochs": 5})
    table = (
        "| trial | state    | learning_rate | hidden_size | topk[0] | valid mse | epochs | run   |\n"
        "|-------|----------|---------------|-------------|---------|-----------|--------|-------|\n"
        "| 0     | complete | 0.01235       | 16          | 7       | 0.2500    | 2      | run-a |\n"
        "| 1     | pruned   | 0.05          | 8           | 5       | (0.8750)  | 2      | run-b |\n"
        "| 2 *   | complete | 0.002         | 8           | 10      | 0.1250    | 2      | run-c |\n"
        "| 3     | fail     | 0.09          |             |         |           |        | run-d |\n"
        "| 4     | pruned   |               |             |         |           |        |       |\n"
        "| 5     | running  |               |             |         |           |        |       |\n"
        "\n"
        "6 trials: 2 complete, 2 pruned, 1 fail, 1 running\n"
        "(a pruned trial's value is its last reported one, in parentheses; * marks the best trial)\n"
        "best trial 2: valid mse = 0.1250, test mse = 0.1500 (run run-c)\n"
        f"best config: {tmp_path / 'best.yaml'}"
    )
    assert (tmp_path / "trials.md").read_text() == table + "\n"
    assert result.table == table + f"\nplots: {tmp_path / 'history.png'}\n       {tmp_path / 'importance.png'}"
    assert result.best_config == tmp_path / "best.yaml" and result.folder == tmp_path
    # the command line's epochs=5 replaces the search file's fixed epochs: 2
    assert (tmp_path / "best.yaml").read_text() == (
        f"# best trial 2 of study 'toy' (search file {tmp_path / 'space.yaml'}): valid mse = 0.125, test mse = 0.15\n"
        f"# use: python run.py --model {toy_task.model} --dataset {toy_task.dataset} --config_files {tmp_path / 'best.yaml'}\n"
        f"model: {toy_task.model}\ndataset: {toy_task.dataset}\nepochs: 5\nlearning_rate: 0.002\nhidden_size: 8\n"
        "topk: [10, 20]\n")
    data = _json(tmp_path)
    assert data.pop("command") == "python run.py --storage postgresql://me:***@db/optuna"
    assert set(data.pop("machine")) >= {"cpu", "cores", "torch", "python"}
    assert data == {
        "study": "toy", "direction": "minimize", "metric": "mse", "search_file": str(tmp_path / "space.yaml"),
        "fixed": {"epochs": 2},
        "best": {"number": 2, "valid": 0.125, "test": {"mse": 0.1500004},
                 "config": {"epochs": 2, "learning_rate": 0.002, "hidden_size": 8, "topk": [10, 20]}, "run": "run-c"},
        "trials": [
            {"number": 0, "state": "complete", "params": {"learning_rate": 0.0123456, "hidden_size": 16, "topk[0]": 7},
             "value": 0.25, "intermediate": {"1": 0.5, "2": 0.25}, "run": "run-a", "epochs": 2,
             "test": {"mse": 0.3, "mae": 0.4}, "best_epoch": 2},
            {"number": 1, "state": "pruned", "params": {"learning_rate": 0.05, "hidden_size": 8, "topk[0]": 5},
             "value": None, "intermediate": {"1": 0.9, "2": 0.875}, "run": "run-b", "epochs": 2},
            {"number": 2, "state": "complete", "params": {"learning_rate": 0.002, "hidden_size": 8, "topk[0]": 10},
             "value": 0.125, "intermediate": {"1": 0.2, "2": 0.125}, "run": "run-c", "epochs": 2,
             "test": {"mse": 0.1500004}},
            {"number": 3, "state": "fail", "params": {"learning_rate": 0.09}, "value": None, "intermediate": {},
             "run": "run-d", "error": "no finite mse was measured"},
            {"number": 4, "state": "pruned", "params": {}, "value": None, "intermediate": {}},
            {"number": 5, "state": "running", "params": {}, "value": None, "intermediate": {}},
        ],
    }
    assert list(data["trials"][1]["intermediate"]) == ["1", "2"]    # epochs in order


def test_report_of_a_best_trial_without_test_metrics_or_run(toy_task, tmp_path):
    base, space = _setup(toy_task, tmp_path, "topk: {choice: [[8], [8, 16]]}\n")
    study = _study("max", direction="maximize")
    dists = {"topk": CategoricalDistribution(["[8]", "[8, 16]"])}
    _complete(study, {"topk": "[8, 16]"}, 0.5, dists, started=datetime.date(2026, 12, 7))
    result = report(study, space, base, "mse", tmp_path)
    assert (tmp_path / "trials.md").read_text() == (
        "| trial | state    | topk    | valid mse | epochs | run |\n"
        "|-------|----------|---------|-----------|--------|-----|\n"
        "| 0 *   | complete | [8, 16] | 0.5000    |        |     |\n"
        "\n"
        "1 trials: 1 complete\n"
        "(a pruned trial's value is its last reported one, in parentheses; * marks the best trial)\n"
        "best trial 0: valid mse = 0.5000, test mse = ? (run ?)\n"
        f"best config: {tmp_path / 'best.yaml'}\n")
    assert (tmp_path / "best.yaml").read_text().splitlines()[0] == (
        f"# best trial 0 of study 'max' (search file {tmp_path / 'space.yaml'}): valid mse = 0.5, test mse = None")
    assert (tmp_path / "best.yaml").read_text().endswith("topk: [8, 16]\n")
    data = _json(tmp_path)
    assert data["direction"] == "maximize" and data["fixed"] == {}
    assert data["best"] == {"number": 0, "valid": 0.5, "test": {}, "config": {"topk": [8, 16]}, "run": None}
    assert data["trials"][0]["started"] == "2026-12-07"             # a value JSON cannot hold is written as text
    assert result.table.endswith(
        f"plots: {tmp_path / 'history.png'}\n"
        "no parameter-importance plot: it needs >= 2 completed trials, the study has 1")


def test_report_without_a_completed_trial_has_no_best(toy_task, tmp_path):
    base, space = _setup(toy_task, tmp_path)
    study = _study()
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"run": "r0"}))
    result = report(study, space, base, "mse", tmp_path)
    assert result.best_config is None and not (tmp_path / "best.yaml").exists()
    assert result.table.splitlines()[2:] == [
        "| 0     | fail  |               |             |         |           |        | r0  |",
        "",
        "1 trials: 1 fail",
        "(a pruned trial's value is its last reported one, in parentheses; * marks the best trial)",
        "no trial completed yet: no best config",
        "no optimisation-history plot: no trial completed",
        "no parameter-importance plot: it needs >= 2 completed trials, the study has 0",
    ]
    assert _json(tmp_path)["best"] is None


def test_report_of_an_empty_study_is_the_header(toy_task, tmp_path):
    base, space = _setup(toy_task, tmp_path, "hidden_size: {int: [8, 16]}\n")
    result = report(_study(), space, base, "mse", tmp_path)
    assert (tmp_path / "trials.md").read_text() == (
        "| trial | state | hidden_size | valid mse | epochs | run |\n"
        "|-------|-------|-------------|-----------|--------|-----|\n"
        "\n"
        "0 trials: \n"
        "(a pruned trial's value is its last reported one, in parentheses; * marks the best trial)\n"
        "no trial completed yet: no best config\n")
    assert result.best_config is None


def test_report_passes_metric_seed_and_completed_count_to_the_plots(toy_task, tmp_path, monkeypatch):
    base, space = _setup(toy_task, tmp_path)
    calls = []
    monkeypatch.setattr(search, "_plots", lambda *a: calls.append(a) or ["note one", "note two"])
    study = _full_study()
    result = report(study, space, base, "mse", tmp_path)
    assert calls == [(study, tmp_path, "mse", 2019, 2)]
    assert result.table.endswith("best config: " + str(tmp_path / "best.yaml") + "\nnote one\nnote two")


# --------------------------------------------------------------------------- the plots


def _fig_with_titles(dpi=50):
    fig, ax = plt.subplots(dpi=dpi)
    ax.plot([0, 1], [0, 1])
    ax.set_title("Optuna's own title", loc="left")
    ax.set_title("centre")
    ax.text(1.4, 0.5, "far to the right of the axes", transform=ax.transAxes)   # only a tight box holds it
    return fig, ax


def test_save_sets_the_title_size_dpi_tight_box_and_closes_only_its_figure(tmp_path):
    fig, ax = _fig_with_titles()
    other = plt.figure()                            # the current figure is another one
    try:
        with plt.rc_context({"savefig.format": "pdf"}):   # a user's default format does not matter
            search._save(ax, tmp_path / "p.png", "my title")
        assert ax.get_title() == "my title" and ax.get_title(loc="left") == ""
        assert tuple(fig.get_size_inches()) == (8, 4.5)
        assert not plt.fignum_exists(fig.number) and plt.fignum_exists(other.number)
        with Image.open(tmp_path / "p.png") as image:
            assert image.format == "PNG"
            assert image.info["dpi"] == pytest.approx((100, 100), abs=0.01)   # not the figure's own 50
            assert image.size[0] > 800              # 8 in x 100 dpi, widened by the tight box to hold the text
    finally:
        plt.close("all")


class _Recorder:
    """Stands in for _save: records (path, title, left title) of each plot and closes its figure."""

    def __init__(self):
        self.calls = []

    def __call__(self, ax, path, title):
        self.calls.append((path.name, title))
        plt.close(ax.figure)


def _two_param_study(n, same=False):
    study = _study("plots")
    dists = {"a": FloatDistribution(0, 1), "b": FloatDistribution(0, 1)}
    for i in range(n):
        x = 0.5 if same else i / max(n, 1)
        _complete(study, {"a": x, "b": (x * 7) % 1}, float(i), dists)
    return study


@pytest.mark.parametrize("n, saved, notes", [
    (0, [], ["no optimisation-history plot: no trial completed",
             "no parameter-importance plot: it needs >= 2 completed trials, the study has 0"]),
    (1, [("history.png", "plots: valid mse by trial")],
     ["plots: {h}", "no parameter-importance plot: it needs >= 2 completed trials, the study has 1"]),
    (2, [("history.png", "plots: valid mse by trial"), ("importance.png", "plots: importance for mse (fANOVA)")],
     ["plots: {h}", "       {i}"]),
])
def test_plots_draw_what_the_completed_trials_allow(tmp_path, monkeypatch, n, saved, notes):
    recorder = _Recorder()
    monkeypatch.setattr(search, "_save", recorder)
    seeds = []
    real = optuna.importance.FanovaImportanceEvaluator

    def evaluator(seed):
        seeds.append(seed)
        return real(seed=seed)
    monkeypatch.setattr(optuna.importance, "FanovaImportanceEvaluator", evaluator)
    got = search._plots(_two_param_study(n), tmp_path, "mse", 7, n)
    assert got == [s.format(h=tmp_path / "history.png", i=tmp_path / "importance.png") for s in notes]
    assert recorder.calls == saved
    assert seeds == ([7] if n >= 2 else [])


def test_plots_pass_the_study_and_the_seeded_evaluator_to_optuna(tmp_path, monkeypatch):
    from optuna.visualization import matplotlib as ovm
    monkeypatch.setattr(search, "_save", _Recorder())
    got = {}
    real = ovm.plot_param_importances

    def spy(study, *, evaluator):
        got.update(study=study, evaluator=evaluator)
        return real(study, evaluator=evaluator)
    monkeypatch.setattr(ovm, "plot_param_importances", spy)
    study = _two_param_study(3)
    search._plots(study, tmp_path, "mse", 11, 3)
    assert got["study"] is study and isinstance(got["evaluator"], optuna.importance.FanovaImportanceEvaluator)


def test_plots_write_both_pngs_and_say_why_importance_is_missing(tmp_path):
    notes = search._plots(_two_param_study(3), tmp_path, "mse", 1, 3)
    assert notes == [f"plots: {tmp_path / 'history.png'}", f"       {tmp_path / 'importance.png'}"]
    for name in ("history.png", "importance.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"
    # every completed trial drew the same values: fANOVA has no variance to split, said in a note
    notes = search._plots(_two_param_study(2, same=True), tmp_path / "same", "mse", 1, 2)
    assert notes[1] == "no parameter-importance plot: Encountered zero total variance in all trees."
    assert plt.get_fignums() == []


def test_plots_silence_only_optunas_experimental_warnings(tmp_path, monkeypatch):
    from optuna.visualization import matplotlib as ovm
    monkeypatch.setattr(search, "_save", _Recorder())
    real = ovm.plot_optimization_history

    def noisy(study):
        warnings.warn("experimental", optuna.exceptions.ExperimentalWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
        return real(study)
    monkeypatch.setattr(ovm, "plot_optimization_history", noisy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search._plots(_two_param_study(1), tmp_path, "mse", 1, 1)
    assert [str(w.message) for w in caught] == ["something else"]


def test_a_failed_importance_plot_leaves_no_figure_open(tmp_path, monkeypatch):
    from optuna.visualization import matplotlib as ovm

    def half_drawn(study, evaluator=None):     # fails after drawing, as a plot may
        plt.figure()
        plt.figure()
        raise RuntimeError("no importance today")
    monkeypatch.setattr(ovm, "plot_param_importances", half_drawn)
    notes = search._plots(_two_param_study(3), tmp_path, "mse", 1, 3)
    assert notes[1] == "no parameter-importance plot: no importance today"
    assert plt.get_fignums() == []
