# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-all lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.check: $(VENV)/.core
	$(BIN)/pip install -q -e '.[check]'
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.check

demo: $(VENV)/.check
	@mkdir -p out
	$(BIN)/wsec examples/tiny_cnn.onnx -o out/tiny_cnn.bin --report-json out/tiny_cnn.report.json \
		--report-html out/tiny_cnn.html
	$(BIN)/wsec inspect out/tiny_cnn.bin
	$(BIN)/wsec run out/tiny_cnn.bin --check examples/tiny_cnn.onnx

# test files run on JOBS workers (pytest-xdist), each file on one worker
JOBS ?= 2

test: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(JOBS) --dist loadfile

# every tier, the slow one included (all nine light models simulated, ...)
test-all: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/pytest -m '' -n $(JOBS) --dist loadfile

bench: $(VENV)/.test
	$(BIN)/python bench/light_models.py

clean:
	rm -rf $(VENV) out .pytest_cache
