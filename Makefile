# ishcount: two commands for a fresh machine.
#   make demo   set up .venv and run the main job on sample_images/ (results in results/)
#   make test   set up .venv (with napari and test extras) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: demo test lint bench samples clean

$(BIN)/.core: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ishcount needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e .
	touch $@

$(BIN)/.full: $(BIN)/.core
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[napari,test]'
	touch $@

demo: $(BIN)/.core
	$(BIN)/ishcount run sample_images --out results

# Napari tests need a display: use Xvfb when there is no screen.
XVFB := $(if $(DISPLAY),,$(shell command -v xvfb-run >/dev/null 2>&1 && echo xvfb-run -a -s \"-screen 0 1280x1024x24\"))

test: $(BIN)/.full
	$(XVFB) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.full
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

samples: $(BIN)/.core
	$(BIN)/python sample_images/make_samples.py

bench: $(BIN)/.full
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[bench]'
	$(BIN)/python benchmarks/accuracy.py

clean:
	rm -rf $(VENV) results .pytest_cache build *.egg-info
