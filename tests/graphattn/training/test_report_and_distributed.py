"""The metrics table's exact layout, and joining a process group from torchrun's environment (the group itself
is faked here; tests/recsys/test_distributed.py runs real ones)."""
import pytest
import torch

from graphattn.training import distributed, format_metrics_table


def test_the_table_is_left_aligned_without_trailing_spaces():
    text = format_metrics_table({"recall@5": torch.tensor(0.25), "ndcg@5": 0.5, "n": torch.tensor([1, 2])})
    assert text == ("metric  @5\n"
                    "ndcg    0.5000\n"
                    "recall  0.2500\n"
                    "\n"
                    "metric  value\n"
                    "n       tensor([1, 2])")


def test_a_single_process_joins_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env(torch.device("cpu")) == torch.device("cpu")
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1


@pytest.mark.parametrize("world", ["2", "3"])
def test_several_processes_on_the_cpu_join_a_gloo_group(monkeypatch, world):
    calls = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setenv("WORLD_SIZE", world)
    assert distributed.init_from_env("cpu") == torch.device("cpu")
    assert calls == [(("gloo",), {})]
    with pytest.raises(ValueError, match="several processes train on cpu .* or cuda .* only"):
        distributed.init_from_env("meta")


def test_a_bad_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="environment variable WORLD_SIZE: expected an integer .*, got 'two'"):
        distributed.init_from_env("cpu")


def test_single_process_collectives_pass_values_through():
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object([3]) == [3]
    assert distributed.all_reduce_sum([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]
    assert distributed.is_main()


def test_rank_and_world_size_come_from_the_group_when_there_is_one(monkeypatch):
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 3)
    assert distributed.world_size() == 4 and distributed.rank() == 3 and not distributed.is_main()
