"""recsys.multitask.selection.infnet_beats_baselines: the spec's check on a hand-made summary."""
from recsys.multitask.selection import infnet_beats_baselines


def _summary(inf, sb, mmoe):
    return {name: {sel: {"mean_auc": [v, 0.01]} for sel in ("per_task", "joint")}
            for name, v in (("INFNet", inf), ("SharedBottom", sb), ("MMoE", mmoe))}


def test_infnet_must_beat_the_better_baseline(capsys):
    assert infnet_beats_baselines(_summary(0.70, 0.69, 0.71)) == {"infnet_beats_baselines_per_task": False,
                                                                  "infnet_beats_baselines_joint": False}
    assert infnet_beats_baselines(_summary(0.72, 0.69, 0.71), "check 1") == {"infnet_beats_baselines_per_task": True,
                                                                             "infnet_beats_baselines_joint": True}
    assert infnet_beats_baselines(_summary(0.71, 0.69, 0.71))["infnet_beats_baselines_joint"] is False   # a tie fails
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "check (per_task): INFNet mean AUC 0.7000 vs best of SharedBottom / MMoE 0.7100: FAIL"
    assert out[2] == "check 1 (per_task): INFNet mean AUC 0.7200 vs best of SharedBottom / MMoE 0.7100: PASS"


def test_a_missing_model_gives_no_check():
    summary = _summary(0.7, 0.6, 0.6)
    del summary["MMoE"]
    assert infnet_beats_baselines(summary) == {}
