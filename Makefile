# Two entry points do all set-up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export ORT_DISABLE_TELEMETRY := 1

.PHONY: test demo bench-loss bench-infer clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -rs tests

demo: $(STAMP)
	$(PY) app.py --host 127.0.0.1 --port 7860

bench-infer: $(STAMP)
	$(PY) -m emktd.bench infer

bench-loss: $(STAMP)
	$(PY) -m emktd.bench loss

clean:
	rm -rf $(VENV) .pytest_cache
