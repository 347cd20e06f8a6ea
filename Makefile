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

.PHONY: venv test test-slow demo bench clean

venv: $(STAMP)

# Re-install only when the pins or the package metadata change.
$(STAMP): requirements.txt setup.py package.xml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check smrl_train smrl_ros test bench launch
	$(BIN)/python -m pytest -q -m "not slow" test

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow test

demo: $(STAMP)
	$(BIN)/python -m smrl_ros.demo --out demo_out

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build install log demo_out *.egg-info
