"""Exact wording of config errors a user reads (found by mutation testing)."""

import pytest

from graphattn.config import Config


def test_unknown_key_without_a_close_match_says_where_defaults_live(toy_task):
    with pytest.raises(ValueError) as info:
        Config(toy_task.model, toy_task.dataset, config_dict={"qqqq": 3})
    assert str(info.value) == ("unknown config key 'qqqq' in command line; every key needs a default in "
                               "graphattn/overall.yaml, the task's overall.yaml, the model's or the dataset's YAML")


@pytest.mark.parametrize("length, shown", [(58, "'" + "x" * 58 + "'"), (59, "'" + "x" * 56 + "...")])
def test_a_wrong_value_is_quoted_in_full_up_to_60_characters(toy_task, length, shown):
    with pytest.raises(TypeError) as info:
        Config(toy_task.model, toy_task.dataset, config_dict={"epochs": "x" * length})
    assert str(info.value).endswith(f"got str {shown}")
