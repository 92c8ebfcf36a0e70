# Two entry points for people: `make demo` (set up + run on bundled photos) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
FACECLOAK := $(VENV)/bin/facecloak
EXTRAS ?= dev,dlib,serve,ray

.PHONY: setup pull demo test lint clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@$(PY) -c "import importlib.util as u, sys; sys.exit('torchvision must not be installed' if u.find_spec('torchvision') else 0)"
	touch $@

pull: setup
	$(FACECLOAK) models pull

demo: pull
	$(FACECLOAK) demo --out out/demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
