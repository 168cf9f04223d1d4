import math

import pytest
from scipy import stats

from vision.chm_corr import SessionLog, analyse_folder, read_log


def _session(folder, name, correct: int, n: int = 20, interactive: bool = False):
    log = SessionLog(folder, name, fsync=False)
    log.append("start", mode="interactive" if interactive else "static")
    for i in range(n):
        if interactive:
            log.append("click", query=i, cell=3, selected=True, mask=[0] * 49, prediction=1, exemplars=[0])
        ai_right = i % 2 == 0                             # half the AI answers right
        good = i < correct
        accept = ai_right if good else not ai_right       # a correct decision accepts iff the AI is right
        log.append("decision", query=i, ai_label=1 if ai_right else 2, true_label=1, accept=accept)


def test_per_session_accuracy_and_t_test_have_the_known_answer(tmp_path):
    static, inter = [10, 12, 14], [16, 18, 20]
    for i, c in enumerate(static):
        _session(tmp_path, f"s{i}", c)
    for i, c in enumerate(inter):
        _session(tmp_path, f"i{i}DEBUG", c, interactive=True)
    _session(tmp_path, "short", 5, n=19, interactive=True)        # dropped: not 20 decisions
    out = analyse_folder(tmp_path)
    assert out["sessions_read"] == 7 and out["sessions_dropped"] == 1
    assert out["static"]["sessions"] == 3 and out["interactive"]["sessions"] == 3
    assert out["static"]["decisions"] == 60
    assert out["static"]["mean_accuracy"] == pytest.approx(0.6)
    assert out["interactive"]["mean_accuracy"] == pytest.approx(0.9)
    assert out["static"]["sd_accuracy"] == pytest.approx(0.1)
    # equal-variance Student t by hand: pooled sd 0.1, t = (0.6 - 0.9) / (0.1 * sqrt(2/3)), df = 4
    t = -0.3 / (0.1 * math.sqrt(2 / 3))
    assert out["t"] == pytest.approx(t)
    assert out["p"] == pytest.approx(2 * stats.t.sf(abs(t), df=4))      # = 0.0213
    # interactive sessions: the AI is right on even i; decisions i >= correct are wrong, so with 16 / 18 / 20
    # correct the right answers are accepted 8 + 9 + 10 of 30 times and the wrong ones rejected 8 + 9 + 10
    assert out["interactive"]["accept_rate_ai_right"] == pytest.approx(27 / 30)
    assert out["interactive"]["reject_rate_ai_wrong"] == pytest.approx(27 / 30)
    assert out["static"]["reject_rate_ai_wrong"] == pytest.approx((5 + 6 + 7) / 30)


def test_bad_log_lines_name_the_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"event": "start"}\nnot json\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2"):
        read_log(p)
    p.write_text('{"event": "decision", "query": 1}\n')
    with pytest.raises(ValueError, match="without 'ai_label'"):
        read_log(p)
    with pytest.raises(FileNotFoundError, match="no \\*.jsonl"):
        analyse_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="session name"):
        SessionLog(tmp_path, "../evil")
