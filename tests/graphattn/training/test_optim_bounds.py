"""The schedule functions' own argument checks (StepSchedule checks first, so the trainer never reaches these)."""
import pytest

from graphattn.training import lr_factor
from graphattn.training.optim import one_cycle


@pytest.mark.parametrize("pct", [1.0, 1.5, -0.01])
def test_one_cycle_refuses_a_warm_up_fraction_outside_0_1(pct):
    with pytest.raises(ValueError, match=r"^onecycle: pct_start must be in \[0, 1\), got"):
        one_cycle(0, 10, pct, 1e-3)


def test_lr_factor_sends_onecycle_to_one_cycle():
    with pytest.raises(ValueError, match=r"^scheduler 'onecycle' sets the learning rate and the momentum, not a "
                                         r"factor: use one_cycle\(\)$"):
        lr_factor(0, 10, 0, "onecycle")


def test_lr_factor_after_the_warm_up():
    assert [lr_factor(k, 10, 2, "none") for k in range(6)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert lr_factor(1, 1, 0, "cosine") == pytest.approx(0.0, abs=1e-12)        # a one-step decay ends at 0
    assert lr_factor(0, 1, 0, "cosine") == 1.0
    assert [lr_factor(k, 10, 0, "cosine") for k in (10, 15, 20)] == pytest.approx([0.0] * 3, abs=1e-12)  # stays 0


def test_only_a_onecycle_schedule_takes_pct_start_from_a_state_and_only_when_present():
    import torch

    from graphattn.training import StepSchedule
    opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    cycle = StepSchedule(opt, "onecycle", 4, 1)
    cycle.load_state_dict({"last_step": 2, "base_lrs": [1e-3]})                 # a state without the key
    assert cycle.pct_start == 0.25 and cycle.last_step == 2
    cosine = StepSchedule(opt, "cosine", 4, 1)
    cosine.load_state_dict({"last_step": 2, "base_lrs": [2e-3], "pct_start": 0.5})
    assert cosine.pct_start is None and cosine.base_lrs == [2e-3]
