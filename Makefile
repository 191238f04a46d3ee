# The two commands of the README. Both run the idempotent set-up first (Debian packages,
# .venv, generated ROS interfaces, editable install; about a second when nothing changed).
PY := .venv/bin/python

.PHONY: setup demo test test-jazzy lint format clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m ovseg3d_ros.tools.demo $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

# The ROS-facing tests (node start-up, conversions, services, transport, bag playback, launch files)
# in .venv-jazzy: ROS 2 Jazzy's PyPI wheels (rclpy 7.1.6) and numpy 1.26, as a Jazzy robot has them.
# scripts/setup_jazzy_env.sh builds it (idempotent; ~4 min from scratch). ARGS go to pytest.
JAZZY_TESTS := tests/test_conversions.py tests/test_pointcloud2_sensor_msgs_py.py tests/test_interfaces.py \
	tests/test_retrieval_node.py tests/test_ros_parameters.py tests/test_approximate_sync.py tests/test_scene_node.py \
	tests/test_scene_node_poses.py tests/test_transport.py tests/test_bag_tools.py tests/test_launch.py

test-jazzy:
	@bash scripts/setup_jazzy_env.sh
	.venv-jazzy/bin/python -m pytest -q $(JAZZY_TESTS) $(ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

clean:
	rm -rf build install log demo_output .pytest_cache .ruff_cache
