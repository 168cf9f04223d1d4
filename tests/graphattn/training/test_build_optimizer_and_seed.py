"""`build_optimizer`: which class, the fused kernel by default (and its fallback only where torch has none), the
`lr` / `weight_decay` overrides on every path, SGD's weight decay and momentum, the unknown-name message; and
`seed_everything`'s numpy seed for seeds beyond 32 bits and its type message. (Written against mutants of
graphattn/training/{optim,runtime}.py that survived the sixth mutation run, docs/testing.md.)"""
import numpy as np
import pytest
import torch

from graphattn.training.optim import build_optimizer
from graphattn.training.runtime import seed_everything

CONFIG = {"optimizer": "adam", "learning_rate": 0.01, "weight_decay": 0.001, "momentum": 0.5}


def _params():
    return [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2), requires_grad=False)]


def test_adam_and_adamw_use_the_fused_kernel_with_the_overrides():
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        opt = build_optimizer(dict(CONFIG, optimizer=name), _params())
        assert type(opt) is cls and opt.defaults["fused"] is True
        assert (opt.defaults["lr"], opt.defaults["weight_decay"]) == (0.01, 0.001)
        assert len(opt.param_groups[0]["params"]) == 1                  # the frozen parameter is left out
        opt = build_optimizer(dict(CONFIG, optimizer=name), _params(), lr=0.5, weight_decay=0.25)
        assert (opt.defaults["lr"], opt.defaults["weight_decay"], opt.defaults["fused"]) == (0.5, 0.25, True)
        plain = build_optimizer(dict(CONFIG, optimizer=name), _params(), lr=0.5, fused=False)
        assert type(plain) is cls and not plain.defaults["fused"]
        assert (plain.defaults["lr"], plain.defaults["weight_decay"]) == (0.5, 0.001)


def test_sgd_keeps_weight_decay_and_momentum_and_unknown_names_are_listed():
    opt = build_optimizer(dict(CONFIG, optimizer="sgd"), _params(), lr=0.2)
    assert type(opt) is torch.optim.SGD
    assert (opt.defaults["lr"], opt.defaults["weight_decay"], opt.defaults["momentum"]) == (0.2, 0.001, 0.5)
    with pytest.raises(ValueError, match=r"^optimizer: expected one of adam, adamw, sgd, got 'rmsprop'$"):
        build_optimizer(dict(CONFIG, optimizer="rmsprop"), _params())


def test_seed_everything_folds_large_seeds_into_numpys_range_and_names_bad_types():
    seed_everything(2**32 + 5)
    a = np.random.random(3)
    np.random.seed(5)
    np.testing.assert_array_equal(a, np.random.random(3))
    seed_everything(7)
    b = np.random.random(3)
    np.random.seed(7)
    np.testing.assert_array_equal(b, np.random.random(3))
    with pytest.raises(TypeError, match=r"^seed must be an int, got str '3'$"):
        seed_everything("3")


def test_deterministic_mode_is_switched_on_only_where_cuda_is():
    try:
        seed_everything(0, reproducibility=True)
        assert torch.are_deterministic_algorithms_enabled() == torch.cuda.is_available()
        seed_everything(0, reproducibility=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
