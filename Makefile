# The two commands of the README: `make run` (set up, train both models on the shipped data) and
# `make test` (set up, lint, run the test suite). Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of PyTorch; install it before the package so the range in pyproject.toml is already met.
TORCH ?= torch==2.13.0

.PHONY: run test lint setup benchmark browser clean

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# Both models side by side, each in its own process on half the cores (docs/speed.md): RealNVP here,
# DDPM's progress in outputs/logs/ddpm.log.
run: $(STAMP)
	$(BIN)/python -m genmodels.side_by_side "train realnvp --config configs/realnvp.yaml" \
		"train ddpm --config configs/ddpm.yaml"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks train_realnvp.py train_ddpm.py
	$(BIN)/ruff format --check src tests benchmarks train_realnvp.py train_ddpm.py

# The results page is checked in headless Chromium where Debian's chromium can be installed (as root, in
# CI); elsewhere that one test is skipped with a message.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ -n "$$CI" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) >/dev/null 2>&1; } \
		|| echo "chromium not installed: the results-page browser test will be skipped"

# One pytest worker per core (at most 8), each on one thread; modules stay whole, so their trained
# fixtures are made once. Plain `pytest` runs the suite in one process.
test: lint browser
	$(BIN)/python -m pytest --numprocesses auto --maxprocesses 8 --dist loadscope

benchmark: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
