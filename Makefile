# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Both create .venv when it is missing and install the pinned dependencies once.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench stress clean

$(STAMP): setup.py constraints.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q pip==25.3
	$(PYTHON) -m pip install -q -e '.[ros,data,train,test]'
	touch $(STAMP)

# The real launch/ros2cli stack (`ros2 launch`, `ros2 param`, ...: no PyPI wheels) from ../shared/ros2-launch
# where it exists (CI has it; its README has the recipe), for the tests that run the tools as a user would;
# they skip, saying why, without it.
LAUNCH_STACK := ../shared/ros2-launch
LAUNCH_STAMP := $(VENV)/.launch-stack
$(LAUNCH_STAMP): $(STAMP) $(wildcard $(LAUNCH_STACK)/wheels/*.whl)
	if [ -d $(LAUNCH_STACK)/wheels ]; then $(PYTHON) -m pip install -q --no-deps $(LAUNCH_STACK)/wheels/*.whl; fi
	touch $@

demo: $(STAMP)
	$(VENV)/bin/xkd-demo --out out/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint $(LAUNCH_STAMP)
	$(PYTHON) -m pytest

bench: $(STAMP)
	$(PYTHON) bench/bench_foundation.py --json out/bench/foundation.json
	$(PYTHON) bench/bench_synthetic.py --seed 5 --json out/bench/synthetic.json
	$(PYTHON) bench/bench_preprocess.py --json out/bench/preprocess.json
	$(PYTHON) bench/bench_model.py --model models/xkd_synthetic.onnx --json out/bench/model.json
	$(PYTHON) bench/bench_node_path.py --json out/bench/node_path.json
	$(PYTHON) bench/bench_peers.py --json out/bench/peers.json

# `make test` RUNS times in a row on a fresh clone of HEAD while every core is kept busy, as on a loaded CI
# machine; report in out/stress/. STRESS_ARGS adds options, e.g. --baseline or --pytest-args test/test_sync.py.
RUNS ?= 10
stress:
	python3 tools/stress_make_test.py --runs $(RUNS) $(STRESS_ARGS)

clean:
	rm -rf $(VENV) build install log out
