"""tools/reliability.py: its judging of a case (exit, one error line, traceback, lost and left-behind files),
and three of its cheapest real cases, run through the script's own case functions."""
import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import reliability as rel  # noqa: E402


def _case(name, code, expect="error", names=(), **kw):
    def setup(tmp):
        (tmp / "keep.txt").write_text("saved before\n")
        (tmp / "run.log").write_text("line 1\n")
        return rel.Attempt([sys.executable, "-c", code], list(names), expect=expect, shown=name, **kw)
    return rel.Case(name, "test", name, setup)


def test_the_drivers_report_what_run_py_reports():
    tree = ast.parse((rel.ROOT / "run.py").read_text())  # read, not imported: importing run.py takes seconds
    (value,) = [n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "USER_ERRORS"]
    assert tuple(e.id for e in value.elts) == rel.USER_ERRORS
    assert "USER_ERRORS = (" + ", ".join(rel.USER_ERRORS) + ")" in rel._DRIVER


def test_judging_a_case(tmp_path):
    clear = _case("clear", "import sys; open('run.log', 'a').write('line 2\\n'); "
                           "print('error: keep.txt line 3: bad id', file=sys.stderr); sys.exit(1)",
                  names=["keep.txt", "line 3"])
    lost = _case("lost", "import os, sys; os.remove('keep.txt'); print('error: x', file=sys.stderr); sys.exit(1)")
    left = _case("left", "import os, sys; os.makedirs('saved/run-1'); open('half.tmp', 'w').write('par'); "
                         "print('error: x', file=sys.stderr); sys.exit(1)")
    crash = _case("crash", "open('keep.txt', 'w').write('other'); raise RuntimeError('boom')", names=["boom"])
    vague = _case("vague", "import sys; print('error: something is wrong', file=sys.stderr); sys.exit(1)",
                  names=["keep.txt"])
    ok = _case("ok", "print('fine')", expect="ok", check=lambda d: [] if (d / "keep.txt").exists() else ["gone"])
    rows = {r["case"]: r for r in rel.run_cases([clear, lost, left, crash, vague, ok], jobs=2, parent=tmp_path)}
    assert rows["clear"]["passed"] and rows["clear"]["lost"] == []  # an appended log is not lost
    assert rows["clear"]["last_line"] == "error: keep.txt line 3: bad id"
    assert rows["lost"]["lost"] == ["keep.txt removed"] and not rows["lost"]["passed"]
    assert rows["left"]["left_behind"] == ["half.tmp", "saved/run-1"] and not rows["left"]["passed"]
    assert rows["crash"]["traceback"] and rows["crash"]["exit"] == 1 and not rows["crash"]["clear"]
    assert rows["crash"]["lost"][0].startswith("keep.txt changed")
    assert not rows["vague"]["names_ok"] and not rows["vague"]["passed"]
    assert rows["ok"]["passed"]
    assert list(tmp_path.iterdir()) == []  # every case folder is removed
    t = rel.totals(list(rows.values()))
    assert (t["cases"], t["clear_errors"], t["something_lost"], t["left_behind"], t["passed"]) == (6, 3, 2, 1, 2)
    table = rel.markdown(list(rows.values()))
    assert table.count("\n") == 2 + 6 and "| FAIL |" in table and "left saved/run-1" in table


def test_cheapest_real_cases_pass(tmp_path):
    cases = [c for c in rel.CASES if c.name in ("zip_dotdot", "zip_absolute", "download_hash_mismatch")]
    assert len(cases) == 3
    rows = rel.run_cases(cases, jobs=3, parent=tmp_path)
    for r in rows:
        assert r["passed"], r
    assert len(rel.CASES) >= 25 and {c.domain for c in rel.CASES} >= {
        "recsys", "config", "checkpoints", "archives", "downloads", "vision", "sequence"}
