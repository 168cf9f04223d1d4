# make test / make run work on a fresh machine with only Python 3.11: the venv is built on first use.
VENV = .venv
PY = $(VENV)/bin/python
PYTHON ?= python3
# The pinned torch comes first so that no later requirement pulls another (multi-GB CUDA) build.
TORCH_SPEC ?= torch==2.13.0
STAMP = $(VENV)/.installed

.PHONY: run test bench mutate mutate-recheck clean results results-check

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[test]"
	# recbole ships ml-100k (our offline default dataset); only its files are read. Its own pins break on
	# numpy 2 and have no wheels for Python >= 3.12, so it is installed without dependencies.
	$(PY) -m pip install --no-deps recbole==1.2.1
	touch $@

run: $(STAMP)
	$(PY) run.py --model KGAT --dataset ml-100k

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	@set -e; found=0; for f in bench/*.py; do \
		[ -e "$$f" ] || continue; found=1; \
		echo "== $$f"; $(PY) "$$f"; \
	done; [ "$$found" = 1 ] || echo "no bench/*.py scripts"

# Published figures (docs/results/<script>/): `make results` re-measures the quick ones and publishes them
# (timings want an idle machine); `make results-check` re-runs every figure that takes under a minute and
# prints published vs now with the tolerance (tools/results_check.py). Neither is part of CI.
results: $(STAMP)
	$(PY) bench/care.py --publish
	$(PY) bench/moh.py --publish
	$(PY) bench/gna.py --publish
	$(PY) bench/attention.py --publish
	$(PY) tools/results_check.py --publish "BPRMF ml-100k"

results-check: $(STAMP)
	$(PY) tools/results_check.py

# Mutation testing (not part of CI; a fresh full run took 37 min on 2 cores, docs/testing.md "Fourteenth run";
# MUTANTS= scopes it). Scope and settings: [tool.mutmut] in
# pyproject.toml; how to read the result: docs/testing.md. Rerunning reuses mutants/ and only re-tests
# mutants whose function or covering tests changed; `make mutate MUTANTS="name ..."` re-runs some only.
MUTATE_JOBS ?= 2
MUTATE_CAP ?= 1.5
MUTATE_BUDGET ?= 3
MUTATE_PRELOAD ?= optuna,optuna.visualization.matplotlib,optuna.importance,matplotlib.pyplot,tqdm.auto,sqlalchemy
mutate: $(STAMP)
	$(PY) -m pip install -q -e ".[mutate]"
	$(PY) tools/mutation_fast.py --fresh-coverage --cap $(MUTATE_CAP) --budget $(MUTATE_BUDGET) --preload $(MUTATE_PRELOAD) --max-children $(MUTATE_JOBS) $(MUTANTS)
	$(PY) tools/mutation_scores.py

# the survivors and timeouts of `make mutate` again, each with every test that covers its function (no --cap, no
# --budget, so a longer time limit)
mutate-recheck: $(STAMP)
	names="$$($(PY) tools/mutation_scores.py --recheck-names)"; \
	if [ -n "$$names" ]; then $(PY) tools/mutation_fast.py --preload $(MUTATE_PRELOAD) --max-children $(MUTATE_JOBS) $$names; \
	else echo "no surviving or timed-out mutants to check again"; fi
	$(PY) tools/mutation_scores.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis mutants
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
