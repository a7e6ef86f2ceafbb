# Quick start: `make demo`, then `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; override e.g. `make TORCH=torch==2.14.1 install`.
TORCH ?= torch==2.13.0
# Test processes (pytest-xdist): two suit this 2-CPU machine; `make TEST_WORKERS=0 test` runs serially.
TEST_WORKERS ?= 2
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
	$(BIN)/python -m datagen n=300 scenario=edge seed=0 out=data/demo_edge_n300 shard_size=50 \
		simulator.precision=0.05 simulator.max_arrivals=50000
	$(BIN)/python train.py data.root=data/demo_edge_n300 trainer.max_epochs=10 model.net.hidden=32 \
		data.batch_size=16 trainer.enable_progress_bar=false
	ckpt=$$(ls -t logs/train/runs/*/checkpoints/epoch_*.ckpt | head -1) && \
	$(BIN)/python eval.py ckpt_path=$$ckpt data.root=data/demo_edge_n300 && \
	$(BIN)/python -m chainnet.score ckpt_path=$$ckpt scenarios=examples/edge_small.yaml \
		out=logs/demo_predictions.csv && \
	$(BIN)/python -m chainnet.optimize ckpt_path=$$ckpt problem=examples/problem_small.yaml \
		budget_s=15 top_k=3 progress=false
	@echo "demo outputs: logs/simulate/runs/ (QoS tables), data/demo_edge_n300/ (dataset),"
	@echo "  logs/train/runs/ (checkpoints, metrics, plots), logs/eval/runs/ (evaluation),"
	@echo "  logs/demo_predictions.csv (scored deployment), logs/optimize/runs/ (best deployment,"
	@echo "  its predicted and simulated QoS, convergence plot)"

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test-full: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "slow or not slow"

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
