# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
# Both create .venv when it is missing and install the pinned dependencies once.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench clean

$(STAMP): setup.py constraints.txt
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q pip==25.3
	$(PYTHON) -m pip install -q -e '.[ros,data,train,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xkd-demo --out out/demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PYTHON) -m pytest

bench: $(STAMP)
	$(PYTHON) bench/bench_foundation.py --json out/bench/foundation.json
	$(PYTHON) bench/bench_synthetic.py --seed 5 --json out/bench/synthetic.json
	$(PYTHON) bench/bench_preprocess.py --json out/bench/preprocess.json
	$(PYTHON) bench/bench_model.py --model models/xkd_synthetic.onnx --json out/bench/model.json
	$(PYTHON) bench/bench_node_path.py --json out/bench/node_path.json

clean:
	rm -rf $(VENV) build install log out
