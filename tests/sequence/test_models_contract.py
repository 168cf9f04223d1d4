"""Contracts every registered ``sequence`` model meets (a model is covered the day it is registered)."""
import pytest
import torch

from graphattn.registry import get_model, list_models
from sequence.base import PointerModel
from sequence.data import PAD, STOP


def _batch(split, n):
    return split.batch(torch.arange(n))


@pytest.mark.parametrize("name", list_models("sequence"))
def test_every_sequence_model_gives_a_finite_loss_and_a_gradient_to_every_parameter(name, config, hull_data):
    model = get_model(name)(config, hull_data)
    assert isinstance(model, PointerModel)
    loss, _ = model.loss(_batch(hull_data.train, 8))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name", list_models("sequence"))
def test_every_sequence_model_decodes_pointers_then_stop_then_padding(name, config, hull_data):
    model = get_model(name)(config, hull_data).eval()
    batch = _batch(hull_data.test, 8)
    out = model.decode(batch, 9, "none")
    assert out.shape == (8, 9) and out.dtype == torch.long
    for row, n in zip(out.tolist(), batch["lengths"].tolist()):
        assert all(-1 <= v <= n for v in row)
        if STOP in row:
            assert all(v == PAD for v in row[row.index(STOP) + 1:])
        else:
            assert PAD not in row
