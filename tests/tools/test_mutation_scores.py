"""tools/mutation_scores.py: equivalent mutants recognised by their change, whatever number mutmut gives them."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import mutation_scores as ms  # noqa: E402

# a mutated file as mutmut 3 writes it: the original and numbered mutants of each function, methods in their class
SOURCE = '''
def x_f__mutmut_orig(a, b):
    c = a + b
    return c * 2


def x_f__mutmut_1(a, b):
    c = a - b
    return c * 2


def x_f__mutmut_2(a, b):
    c = a + b
    return c * 3


class K:
    def xǁKǁg__mutmut_orig(self):
        return sum([1, 2], start=0)

    def xǁKǁg__mutmut_1(self):
        return sum([1, 2], )
'''
# the same functions where another run's coverage numbered the mutants the other way round
RENUMBERED = SOURCE.replace("x_f__mutmut_1(", "x_f__mutmut_X(").replace("x_f__mutmut_2(", "x_f__mutmut_1(") \
    .replace("x_f__mutmut_X(", "x_f__mutmut_2(")


def test_each_mutant_is_its_function_and_its_diff_with_a_line_of_context():
    changes = ms.mutant_changes(SOURCE, "pkg.mod")
    signature = ms.mutant_changes(SOURCE.replace("def x_f__mutmut_2(a, b):", "def x_f__mutmut_2(a, c):"), "pkg.mod")
    assert signature["pkg.mod.x_f__mutmut_2"][1][:2] == ("-def x_f(a, b):", "+def x_f(a, c):")
    assert changes == {
        "pkg.mod.x_f__mutmut_1": ("x_f", (" def x_f(a, b):", "-    c = a + b", "+    c = a - b", "     return c * 2")),
        "pkg.mod.x_f__mutmut_2": ("x_f", ("     c = a + b", "-    return c * 2", "+    return c * 3")),
        "pkg.mod.xǁKǁg__mutmut_1": ("xǁKǁg", ("     def xǁKǁg(self):", "-        return sum([1, 2], start=0)",
                                             "+        return sum([1, 2], )")),
    }


def _folder(tmp_path, name, source, codes):
    root = tmp_path / name
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text(source)
    (root / "pkg" / "mod.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    (root / "pkg" / "__init__.py").write_text("")
    return root


def test_an_equivalent_is_recognised_by_its_change_under_another_number(tmp_path):
    old = _folder(tmp_path, "old", SOURCE, {"pkg.mod.x_f__mutmut_1": 1, "pkg.mod.x_f__mutmut_2": 0,
                                            "pkg.mod.xǁKǁg__mutmut_1": 0})
    out = tmp_path / "changes.json"
    listed = {"pkg.mod.x_f__mutmut_2", "pkg.mod.xǁKǁg__mutmut_1", "pkg.mod.x_f__mutmut_9"}
    problems = ms.record_equivalents([old], listed, out=out)
    assert problems == ["pkg.mod.x_f__mutmut_9: survived in no folder"]
    recorded = ms.recorded_changes(out)
    assert sorted(recorded) == ["pkg.mod.x_f__mutmut_2", "pkg.mod.xǁKǁg__mutmut_1"]
    listed_changes = {(ms.module_of(n), *c) for n, c in recorded.items()}

    new = ms.changes_in(_folder(tmp_path, "new", RENUMBERED, {}))
    equivalent = {name for name, change in new.items()
                  if ms.is_equivalent(name, change, listed, recorded, listed_changes)}
    assert equivalent == {"pkg.mod.x_f__mutmut_1", "pkg.mod.xǁKǁg__mutmut_1"}   # x_f's 2 is now 1
    # a listed name without a recorded change is still matched by its name
    assert ms.is_equivalent("pkg.mod.x_f__mutmut_9", None, listed, recorded, listed_changes)
    assert not ms.is_equivalent("pkg.mod.x_f__mutmut_2", new["pkg.mod.x_f__mutmut_2"], listed, recorded,
                                listed_changes)


def test_a_name_that_survived_with_two_different_changes_is_not_recorded(tmp_path):
    codes = {"pkg.mod.x_f__mutmut_1": 0, "pkg.mod.x_f__mutmut_2": 0}
    a, b = _folder(tmp_path, "a", SOURCE, codes), _folder(tmp_path, "b", RENUMBERED, codes)
    out = tmp_path / "changes.json"
    assert ms.record_equivalents([a, b], {"pkg.mod.x_f__mutmut_1"}, out=out) == [
        "pkg.mod.x_f__mutmut_1: different changes in folders"]
    assert ms.recorded_changes(out) == {}


def test_the_recorded_changes_are_those_of_the_listed_equivalents():
    listed = ms.equivalent_mutants()
    recorded = ms.recorded_changes()
    assert set(recorded) <= listed
    for name, (function, change) in recorded.items():
        assert name.rsplit(".", 1)[1].startswith(function + "__mutmut_")
        assert any(line.startswith("-") for line in change) and any(line.startswith("+") for line in change)


def test_renumber_renames_the_listed_equivalents_to_the_names_of_their_changes(tmp_path):
    old = _folder(tmp_path, "old", SOURCE, {"pkg.mod.x_f__mutmut_1": 0, "pkg.mod.x_f__mutmut_2": 0})
    out = tmp_path / "changes.json"
    ms.record_equivalents([old], {"pkg.mod.x_f__mutmut_1", "pkg.mod.x_f__mutmut_2"}, out=out)
    doc = tmp_path / "testing.md"
    text = ("# T\n\nRun: `pkg.mod.x_f__mutmut_1` survived.\n\n### Equivalent mutants\n\n"
            "- `pkg.mod.x_f__mutmut_1`, `pkg.mod.x_f__mutmut_2`: both.\n- `pkg.mod.x_g__mutmut_4`: unrecorded.\n"
            "\n### Survivors left\n\n- `pkg.mod.x_f__mutmut_2`\n")
    doc.write_text(text)
    new = _folder(tmp_path, "new", RENUMBERED, {})
    assert ms.renumber(doc, out, new) == {"pkg.mod.x_f__mutmut_1": "pkg.mod.x_f__mutmut_2",
                                          "pkg.mod.x_f__mutmut_2": "pkg.mod.x_f__mutmut_1"}
    assert doc.read_text() == text.replace("- `pkg.mod.x_f__mutmut_1`, `pkg.mod.x_f__mutmut_2`: both.",
                                           "- `pkg.mod.x_f__mutmut_2`, `pkg.mod.x_f__mutmut_1`: both.")
    assert ms.recorded_changes(out) == {name: change for name, change in ms.changes_in(new).items()
                                        if name.startswith("pkg.mod.x_f")}


def test_recording_keeps_what_is_recorded_and_drops_what_is_no_longer_listed(tmp_path):
    out = tmp_path / "changes.json"
    ms.record_equivalents([_folder(tmp_path, "old", SOURCE, {"pkg.mod.x_f__mutmut_1": 0})],
                          {"pkg.mod.x_f__mutmut_1"}, out=out)
    before = ms.recorded_changes(out)
    new = _folder(tmp_path, "new", RENUMBERED, {"pkg.mod.x_f__mutmut_1": 0, "pkg.mod.xǁKǁg__mutmut_1": 0})
    assert ms.record_equivalents([new], {"pkg.mod.x_f__mutmut_1", "pkg.mod.xǁKǁg__mutmut_1"}, out=out) == []
    after = ms.recorded_changes(out)
    assert after["pkg.mod.x_f__mutmut_1"] == before["pkg.mod.x_f__mutmut_1"]   # not taken again from `new`
    assert set(after) == {"pkg.mod.x_f__mutmut_1", "pkg.mod.xǁKǁg__mutmut_1"}
    ms.record_equivalents([new], {"pkg.mod.xǁKǁg__mutmut_1"}, out=out)
    assert set(ms.recorded_changes(out)) == {"pkg.mod.xǁKǁg__mutmut_1"}


def test_recheck_names_are_the_unlisted_survivors_and_the_timeouts(tmp_path, monkeypatch, capsys):
    folder = _folder(tmp_path, "mutants", SOURCE, {"pkg.mod.x_f__mutmut_1": 0, "pkg.mod.x_f__mutmut_2": 1,
                                                   "pkg.mod.xǁKǁg__mutmut_1": 0, "pkg.mod.x_f__mutmut_3": -24,
                                                   "pkg.mod.x_f__mutmut_4": None})
    doc = tmp_path / "docs" / "testing.md"
    doc.parent.mkdir()
    doc.write_text("### Equivalent mutants\n\n- `pkg.mod.xǁKǁg__mutmut_1`: same sum.\n")
    monkeypatch.setattr(ms, "ROOT", tmp_path)
    monkeypatch.setattr(ms, "CHANGES", doc.parent / "mutation-equivalents.json")
    monkeypatch.setattr(ms.equivalent_mutants, "__defaults__", (doc,))
    monkeypatch.setattr(ms.collect, "__defaults__", (folder,))
    monkeypatch.setattr(sys, "argv", ["mutation_scores.py", "--recheck-names"])
    ms.main()
    assert capsys.readouterr().out == "pkg.mod.x_f__mutmut_1\npkg.mod.x_f__mutmut_3\n"
