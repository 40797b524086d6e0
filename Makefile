.PHONY: setup lint format test main bench-export bench-pipeline bench-train-step

setup:
	bash scripts/setup.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

format:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

test:
	bash scripts/test.sh

main:
	bash scripts/main.sh

bench-export:
	.venv/bin/python bench/export.py

bench-pipeline:
	.venv/bin/python bench/pipeline.py

bench-train-step:
	.venv/bin/python bench/train_step.py
