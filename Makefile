# Quick start: `make demo`, then `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; override e.g. `make TORCH=torch==2.14.1 install`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-full lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m chainnet.simulate scenario_file=examples/edge_small.yaml
	$(BIN)/python -m datagen n=200 scenario=dsn24 seed=0 out=data/demo_dsn24_n200 shard_size=50 \
		simulator.precision=0.05 simulator.max_arrivals=50000
	$(BIN)/python train.py data.root=data/demo_dsn24_n200 trainer.max_epochs=8 model.net.hidden=32 \
		data.batch_size=16 trainer.enable_progress_bar=false
	$(BIN)/python eval.py ckpt_path=$$(ls -t logs/train/runs/*/checkpoints/last.ckpt | head -1) \
		data.root=data/demo_dsn24_n200
	@echo "demo outputs: logs/simulate/runs/ (QoS tables), data/demo_dsn24_n200/ (dataset),"
	@echo "  logs/train/runs/ (checkpoints, metrics, plots), logs/eval/runs/ (evaluation)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-full: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python experiments/bench_simulator.py
	$(BIN)/python experiments/bench_datagen.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
