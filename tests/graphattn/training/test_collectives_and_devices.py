"""Single-process tests of the paths that only several processes or an accelerator take: the collectives of
`graphattn.training.distributed` with the process group faked (tests/recsys/test_distributed.py runs real
ones), `resolve_device` with CUDA / MPS faked, and `StepSchedule`'s state before the first epoch."""
import pytest
import torch
from torch import nn

from graphattn.training import StepSchedule, distributed, resolve_device


@pytest.fixture
def two_ranks(monkeypatch):
    """This process as rank 0 of a group of two; the collectives record their calls."""
    calls = []
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(distributed.dist, "broadcast", lambda tensor, src: calls.append(("broadcast", src)))
    monkeypatch.setattr(distributed.dist, "broadcast_object_list",
                        lambda box, src: calls.append(("broadcast_object_list", list(box), src)))
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda t: (calls.append(("all_reduce", t.dtype)), t.mul_(2)))
    return calls


def test_a_group_counts_as_distributed_only_with_more_than_one_process(monkeypatch):
    monkeypatch.setattr(distributed.dist, "is_available", lambda: True)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    sizes = {"n": 1}
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: sizes["n"])
    assert not distributed.is_distributed()     # a group of one (e.g. torchrun --nproc_per_node 1)
    sizes["n"] = 2
    assert distributed.is_distributed()
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    assert not distributed.is_distributed()


def test_a_cuda_process_joins_an_nccl_group_on_its_local_gpu(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.init_from_env("cuda") == torch.device("cuda", 1)
    assert calls == [("set_device", torch.device("cuda", 1)), (("nccl",), {"device_id": torch.device("cuda", 1)})]


def test_broadcast_buffers_sends_rank_0s_persistent_buffers_only(two_ranks, monkeypatch):
    module = nn.BatchNorm1d(3)                                      # running_mean, running_var, num_batches_tracked
    module.register_buffer("edges", torch.zeros(2), persistent=False)
    distributed.broadcast_buffers(module)
    assert two_ranks == [("broadcast", 0)] * 3
    two_ranks.clear()
    distributed.broadcast_buffers(module, src=1)
    assert two_ranks == [("broadcast", 1)] * 3
    received = []                                                    # the buffers themselves go out, in place

    def broadcast(tensor, src):
        received.append(tensor.data_ptr())
        tensor.fill_(7)
    monkeypatch.setattr(distributed.dist, "broadcast", broadcast)
    distributed.broadcast_buffers(module)
    assert received == [b.data_ptr() for b in (module.running_mean, module.running_var, module.num_batches_tracked)]
    assert module.running_mean.eq(7).all() and module.num_batches_tracked == 7 and module.edges.eq(0).all()


def test_broadcast_object_comes_from_rank_0_by_default(two_ranks):
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert two_ranks == [("broadcast_object_list", [{"a": 1}], 0)]
    two_ranks.clear()
    distributed.broadcast_object({"a": 1}, src=1)                  # rank 0 is not the source: it sends nothing
    assert two_ranks == [("broadcast_object_list", [None], 1)]


def test_all_reduce_sum_reduces_a_list_and_skips_an_empty_one(two_ranks):
    assert distributed.all_reduce_sum([1.0, 2.5], torch.device("cpu")) == [2.0, 5.0]   # the fake doubles
    assert two_ranks == [("all_reduce", torch.float64)]
    two_ranks.clear()
    assert distributed.all_reduce_sum([], torch.device("cpu")) == []
    assert two_ranks == []


def test_auto_takes_cuda_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_mps_is_checked_as_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'mps' requested but MPS is not available here"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")


def test_a_schedule_has_no_steps_before_its_first_epoch():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    schedule = StepSchedule(opt, "onecycle", 4, 1)
    assert schedule.steps_per_epoch == 0
    with pytest.raises(ValueError, match="step 1 is past the schedule's 0 steps"):
        schedule.step()                                             # start_epoch() not called: no length yet


@pytest.mark.parametrize("make, key", [
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "momentum"),
    (lambda p: torch.optim.Adam(p, lr=0.1), "betas"),
])
def test_onecycle_names_the_momentum_it_cycles(make, key):
    opt = make([nn.Parameter(torch.zeros(1))])
    schedule = StepSchedule(opt, "onecycle", 4, 1)
    assert schedule.momentum_key == key
    schedule.start_epoch(5)
    momentum = opt.param_groups[0][key]
    assert (momentum[0] if key == "betas" else momentum) == pytest.approx(0.95)


def test_seeding_with_cuda_switches_deterministic_kernels_on_with_warnings_only(monkeypatch):
    from graphattn.training import seed_everything
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, **kwargs: calls.append((mode, kwargs)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # torch.manual_seed only queues the CUDA seed
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")                # restored afterwards
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "deterministic", cudnn.deterministic)
    monkeypatch.setattr(cudnn, "benchmark", cudnn.benchmark)
    seed_everything(3, True)
    seed_everything(3, False)
    assert calls == [(True, {"warn_only": True}), (False, {"warn_only": True})]


def test_the_cuda_generators_are_restored_only_from_a_state_that_has_them(monkeypatch):
    from graphattn.training import capture_rng_state, restore_rng_state
    state = capture_rng_state()
    assert "cuda" not in state                                    # none here
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    restore_rng_state(state)
    assert restored == []
    restore_rng_state({**state, "cuda": ["gpu0"]})
    assert restored == [["gpu0"]]
