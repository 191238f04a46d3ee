# The two commands of the README. Both run the idempotent set-up first (Debian packages,
# .venv, generated ROS interfaces, editable install; about a second when nothing changed).
PY := .venv/bin/python

.PHONY: setup demo test lint format clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m ovseg3d_ros.demo $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

clean:
	rm -rf build install log demo_output .pytest_cache .ruff_cache
