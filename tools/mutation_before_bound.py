"""Upper bound of the "before" mutation score from one mutmut run (see docs/testing.md).

"Before" is the suite without the tests added by the contract/Trainer work: tests/contracts/,
tests/graphattn/test_trainer.py, test_attention_masks.py and test_config_layers.py, and without the
mutation-testing tests (test_ops_shapes.py, test_config_messages.py). A mutant killed by today's suite
can only have been killed "before" if a test of that older set ran its function, so counting those gives
an upper bound of the before score, over the same checked mutants, without a second run.
"""

import json
from collections import Counter
from pathlib import Path

from mutation_scores import KILLED, collect, equivalent_mutants

NEW = ("tests/contracts/", "tests/graphattn/test_trainer.py", "tests/graphattn/test_attention_masks.py",
       "tests/graphattn/test_config_layers.py", "tests/graphattn/test_ops_shapes.py",
       "tests/graphattn/test_config_messages.py", "tests/graphattn/training/test_rundir_contents.py",
       "tests/graphattn/training/test_trainer_records.py", "tests/graphattn/training/test_report_and_distributed.py",
       "tests/graphattn/training/test_optim_bounds.py", "tests/recsys/models/test_loss_formulas.py",
       "tests/recsys/models/test_kgat_options.py")
ROOT = Path(__file__).resolve().parents[1]


def main():
    tests = json.loads((ROOT / "mutants" / "mutmut-stats.json").read_text())["tests_by_mangled_function_name"]
    equivalent = equivalent_mutants()
    total = Counter()
    print(f"{'module':45s}{'checked':>9s}{'after':>9s}{'before<=':>10s}")
    for module, codes in collect().items():
        c = Counter()
        for name, code in codes.items():
            if code is None or name in equivalent:
                continue
            c["checked"] += 1
            if code in KILLED:
                c["after"] += 1
                function = name.rsplit("__mutmut_", 1)[0]
                if any(not t.startswith(NEW) for t in tests.get(function, ())):
                    c["before"] += 1
        total.update(c)
        if c["checked"]:
            print(f"{module:45s}{c['checked']:9d}{100 * c['after'] / c['checked']:8.1f}%{100 * c['before'] / c['checked']:9.1f}%")
    print(f"{'total':45s}{total['checked']:9d}{100 * total['after'] / total['checked']:8.1f}%"
          f"{100 * total['before'] / total['checked']:9.1f}%")


if __name__ == "__main__":
    main()
