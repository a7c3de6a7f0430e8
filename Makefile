# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench lint docs system-deps clean gpu-fixtures

run: $(VENV)/.installed system-deps
	$(BIN)/symbert params --preset bert-base --by-component
	$(BIN)/symbert report --preset bert-base --batch 32 --seq-len 512

test: $(VENV)/.installed-validate system-deps
	$(BIN)/ruff check symbert tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-validate
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/cpu_peaks.py

# On a machine with a CUDA GPU and torch: record the real allocation traces of a grid of jobs, in under 10 minutes
# (README: recording real allocation traces).
gpu-fixtures:
	$(PYTHON) scripts/record_gpu_fixtures.py --out tests/fixtures/gpu/recorded

lint: $(VENV)/.installed
	$(BIN)/ruff check symbert tests benchmarks

# Generated docs: the diagram gallery (docs/gallery.md, docs/diagrams/), the formula reference (docs/formulas.md),
# the plots of docs/rl-memory.md and docs/parallel.md (docs/img/), the explore page's screenshot (headless Chromium)
# and the output of every console block in README.md and docs/*.md (scripts/console_docs.py).
# Tests check the gallery, the reference and the console blocks are fresh.
docs: $(VENV)/.installed system-deps
	$(BIN)/python scripts/make_docs.py
	$(BIN)/python -m symbert.render.reference docs/formulas.md
	$(BIN)/python -m symbert.render.plots docs/img
	$(BIN)/python -m symbert.render.layout_plot docs/img
	$(BIN)/python scripts/explore_screenshot.py docs/img/explore.png
	$(BIN)/python scripts/console_docs.py

# Graphviz's `dot` draws the diagrams, and headless Chromium runs the explore page's browser test; both
# installed from Debian/Ubuntu packages where they are missing (the browser test skips without Chromium).
system-deps:
	@command -v dot >/dev/null || { command -v apt-get >/dev/null \
		&& $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq graphviz >/dev/null; } \
		|| echo "symbert: install Graphviz (the 'dot' program) for diagrams: https://graphviz.org/download/"
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { command -v apt-get >/dev/null \
		&& $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; } \
		|| echo "symbert: install Chromium for the explore page's browser test (it skips without it)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# The validate extra: torch pinned to 2.13.0 (the CPU build) and Hugging Face transformers.
$(VENV)/.installed-validate: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,validate]"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
