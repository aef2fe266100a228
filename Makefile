# Convenience targets; the README's two commands work without make.
.PHONY: setup setup-dev demo test lint bench

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

demo: setup
	.venv/bin/edgeasr demo

test: setup-dev
	.venv/bin/python -m pytest

lint: setup-dev
	.venv/bin/ruff check .
