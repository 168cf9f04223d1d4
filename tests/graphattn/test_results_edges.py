"""graphattn/results.py: the cases the eighth mutation run (#22) found untested."""
import argparse

import pytest

from graphattn import results as R


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(R, "PUBLISHED_DIR", tmp_path / "docs" / "results")
    return tmp_path


def test_cpu_model_reads_proc_cpuinfo_itself(monkeypatch):
    # only the real path answers; any other path raises like a missing file would
    def read_text(self, *a, **k):
        if str(self) != "/proc/cpuinfo":
            raise OSError(f"no {self}")
        return "model name\t: Right CPU\n"
    monkeypatch.setattr(R.Path, "read_text", read_text)
    monkeypatch.setattr(R.platform, "processor", lambda: "fallback")
    assert R._cpu_model() == "Right CPU"


def test_cores_from_the_affinity_mask_else_cpu_count(monkeypatch):
    monkeypatch.setattr(R.os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(R.os, "cpu_count", lambda: 99)
    assert R.machine_info()["cores"] == 3
    monkeypatch.delattr(R.os, "sched_getaffinity")
    assert R.machine_info()["cores"] == 99


def test_from_args_without_output_attributes_does_not_publish(roots):
    out = R.Results.from_args("demo", argparse.Namespace())
    assert out.publish_dir is None and out.dir == roots / "results" / "demo"


def test_publishing_twice_into_an_existing_folder(roots):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(1, 1))
    out = R.Results("demo", publish=True, argv=["p"])
    out.save_figure(fig, "a.png", dpi=10)
    out.save_figure(fig, "b.png", dpi=10)            # docs/results/demo/ exists now
    plt.close(fig)
    pub = roots / "docs" / "results" / "demo"
    assert (pub / "a.png").exists() and (pub / "b.png").exists()


def test_copy_file_creates_the_parents_and_copies_twice(roots):
    src = roots / "t.csv"
    src.write_text("a\n")
    out = R.Results("demo", publish=True, argv=["p"])
    out.copy_file(src)                               # neither docs/ nor docs/results/ exist yet
    out.copy_file(src)
    assert (roots / "docs" / "results" / "demo" / "t.csv").read_text() == "a\n"


def test_platform_is_the_terse_form(monkeypatch):
    # on Linux terse and full forms coincide, so look at the argument itself (they differ on Windows and macOS)
    monkeypatch.setattr(R.platform, "platform", lambda aliased=False, terse=False: f"terse={terse!r}")
    assert R.machine_info()["platform"] == "terse=True"
