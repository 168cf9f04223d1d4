"""tools/results_check.py: the JSON key paths and the tolerance rule that decide match / MISS."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import results_check as rc  # noqa: E402

DOC = {"care_s0": {"params": 7341000}, "rows": [{"side": 32, "r": 6.5}, {"side": 64, "r": 37.0}],
       "grid": [{"kernel": 16, "stride": 8, "x": 1}, {"kernel": 16, "stride": 16, "x": 2}], "test": {"recall@20": 0.3354}}


def test_lookup_paths():
    assert rc.lookup(DOC, "care_s0.params") == 7341000
    assert rc.lookup(DOC, "rows[side=64].r") == 37.0
    assert rc.lookup(DOC, "rows[0].side") == 32
    assert rc.lookup(DOC, "grid[kernel=16,stride=16].x") == 2
    assert rc.lookup(DOC, "test.recall@20") == 0.3354
    with pytest.raises(KeyError, match="2 items"):
        rc.lookup(DOC, "grid[kernel=16].x")
    with pytest.raises(KeyError, match="no key 'nope'"):
        rc.lookup(DOC, "care_s0.nope")


def test_tolerances():
    band = rc.rel("t", "k", 0.25)
    assert rc.matches(band, 10.0, 12.5) and rc.matches(band, 10.0, 7.5)
    assert not rc.matches(band, 10.0, 12.6) and not rc.matches(band, 10.0, 7.4)
    ex = rc.exact("c", "k")
    assert rc.matches(ex, 7341000, 7341000) and not rc.matches(ex, 7341000, 7341001)
    near = rc.exact("r", "k", 1e-4)
    assert rc.matches(near, 0.3354, 0.33549) and not rc.matches(near, 0.3354, 0.3356)
    assert not rc.matches(band, float("nan"), 1.0)


def test_every_check_is_well_formed():
    names = [c.name for c in rc.CHECKS]
    assert len(names) == len(set(names))
    for c in rc.CHECKS:
        assert (Path(rc.ROOT) / c.argv[0]).is_file(), c.argv[0]
        assert any("{out}" in a for a in c.argv), f"{c.name} must write into the temporary folder"
        assert c.published.startswith("docs/results/") and c.figures


def test_every_figure_key_resolves_in_its_published_json():
    """An ambiguous or stale key (e.g. a row selector matching two rows) fails here, not at results-check time."""
    import json
    for c in rc.CHECKS:
        published = Path(rc.ROOT) / c.published
        assert published.is_file(), f"{c.name}: {c.published} not published"
        doc = json.loads(published.read_text())
        for fig in c.figures:
            float(rc.lookup(doc, fig.key))
