"""PerTaskSelection: each task's head at its own best valid epoch; training goes on while any task improves."""
import recsys.multitask  # noqa: F401
from graphattn.config import Config
from graphattn.training import Trainer
from recsys.multitask.selection import PerTaskSelection


def test_per_task_selection_reads_each_task_at_its_best_valid_epoch():
    config = Config("SharedBottom", "mtl-synthetic", config_dict={
        "synthetic_samples": 600, "train_batch_size": 128, "embedding_size": 4, "bottom_hidden": [8],
        "tower_hidden": [4], "epochs": 4, "stopping_step": 1, "show_progress": False, "log_level": "WARNING",
        "learning_rate": 0.01, "seed": 1})
    trainer = Trainer.from_config(config)
    tasks = list(trainer.task.data.tasks)
    selection = PerTaskSelection(trainer, tasks, 512)
    trainer.fit()
    trace = selection.trace
    assert [r["epoch"] for r in trace] == list(range(1, len(trace) + 1))
    per_task, epochs = selection.result()
    for t in tasks:
        best = max(trace, key=lambda r: r["valid"][f"auc_{t}"])
        assert epochs[t] == best["epoch"] and per_task[f"auc_{t}"] == best["test"][f"auc_{t}"]
        assert selection.best[t] == best["valid"][f"auc_{t}"]
    assert per_task["mean_auc"] == sum(per_task[f"auc_{t}"] for t in tasks) / len(tasks)
    # with patience 1 the run only went past an epoch whose joint metric did not improve if some task did
    joint = [r["valid"]["mean_auc"] for r in trace]
    for i in range(1, len(trace) - 1):
        if joint[i] <= max(joint[:i]):
            assert any(trace[i]["valid"][f"auc_{t}"] >= max(r["valid"][f"auc_{t}"] for r in trace[:i + 1])
                       for t in tasks)
