# tfq8: two commands do all set-up.
#   make demo   build .venv (pinned) and run the end-to-end demo on scikit-learn's digits
#   make test   build the same .venv and run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfq8-installed
OUT ?= out
PYTEST_ARGS ?=

.PHONY: all demo test bench clean

all: test

$(STAMP): requirements.lock setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.2"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) examples/demo.py --output_dir=$(OUT)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/accuracy.py

clean:
	rm -rf $(VENV) $(OUT) *.egg-info
