# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing and
# install what they need; both are safe to run again.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv venv-tf test test-fast bench lint demo clean tools

# the C kernels are compiled by this install: a change to their source rebuilds the venv step
$(STAMP): setup.cfg pyproject.toml setup.py $(wildcard redis_consumer/deepcell/*.c redis_consumer/deepcell/*.h)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip setuptools wheel
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# TensorFlow and the official tensorflow-serving-api live in their own venv (~2 GB), used only by
# the wire-compatibility and SavedModel tests (they run `make venv-tf` when it is missing); the
# worker's .venv never gets TensorFlow.
TF_VENV  ?= .venv-tf
TF_STAMP := $(TF_VENV)/.installed

$(TF_STAMP): setup.cfg
	@test -x $(TF_VENV)/bin/python || $(PYTHON) -m venv $(TF_VENV)
	$(TF_VENV)/bin/python -m pip install --disable-pip-version-check -q -e . 'tensorflow-serving-api>=2.15'
	@touch $(TF_STAMP)

venv-tf: $(TF_STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/redis-consumer demo

bench: $(STAMP)
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check redis_consumer tests bench consume_redis_events.py

# helm for the chart tests, into .tools/ (the tests run this themselves when it is missing)
tools:
	sh scripts/install-tools.sh

clean:
	rm -rf $(VENV) .tools build dist *.egg-info .pytest_cache demo-output
	find redis_consumer -name '*.so' -delete
