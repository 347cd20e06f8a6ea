# smrl: one command for the demo, one for the tests. Both create/refresh .venv themselves.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin
# ROS 2 from pip: Fast DDS, discovery kept on this machine.
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONUNBUFFERED := 1

# The ROS 2 launch stack (launch, launch_ros, launch_pytest, ros2launch, the ros2 CLI) is not on
# PyPI: where its wheels are present, `make test` also builds the package with colcon and runs
# the launch tests under the real `ros2 launch`, in an overlay beside the venv (pytest 7.4.4: the
# launch_testing/launch_pytest plugins of these versions do not load under pytest 9).
ROS2_LAUNCH_WHEELS ?= ../shared/ros2-launch
OVERLAY := .launch_overlay
LAUNCH_TESTS := test/test_launch_cli.py test/test_launch_data_path.py test/test_graph.py

.PHONY: venv test test-launch test-slow demo bench clean

venv: $(STAMP)

# Re-install only when the pins or the package metadata change.
$(STAMP): requirements.txt setup.py package.xml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check smrl_train smrl_ros test bench launch
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow" test
	$(MAKE) --no-print-directory test-launch

test-launch: $(STAMP)
	@if ! ls $(ROS2_LAUNCH_WHEELS)/launch-*.whl >/dev/null 2>&1; then \
	  echo "launch tests skipped: no ROS 2 launch stack wheels in $(ROS2_LAUNCH_WHEELS) (set ROS2_LAUNCH_WHEELS)"; \
	  exit 0; fi; \
	test -f $(OVERLAY)/.installed || { $(BIN)/pip install -q --disable-pip-version-check --no-deps \
	  --target $(OVERLAY) pytest==7.4.4 iniconfig==2.3.1 osrf-pycommon==2.0.2 psutil==7.2.2 \
	  $(ROS2_LAUNCH_WHEELS)/*.whl 2>&1 | { grep -v "is ignored: it is neither" || true; } && touch $(OVERLAY)/.installed; }; \
	source $(BIN)/activate && { colcon --log-base log build --base-paths . --build-base build \
	  --install-base install > build.log 2>&1 || { cat build.log; exit 1; }; } && source install/setup.bash && \
	  PATH=$(CURDIR)/$(OVERLAY)/bin:$$PATH PYTHONPATH=$(CURDIR)/$(OVERLAY):$$PYTHONPATH \
	  python -m pytest -p no:cacheprovider -q $(LAUNCH_TESTS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow test

# MUJOCO_GL=egl: MuJoCo's offscreen renderer (the report's filmstrip) needs no display.
demo: $(STAMP)
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(BIN)/python -m smrl_ros.demo --out demo_out

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(OVERLAY) build install log build.log demo_out *.egg-info
