# Two-stream ConvNets: the executable book.
#   make book   set up everything (venv, packages, lab data) and build the HTML book
#   make test   set up everything and run the unit tests (and, once they exist, the notebook and browser checks)
# Set-up is idempotent: a second run only redoes what changed.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
LAB     ?= data/lab
SCALE   ?= small
WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: setup book test unit-test lab bench clean help

help:
	@sed -n '1,5p' Makefile

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --disable-pip-version-check -e '.[book,test]'
	@$(PY) -c "import cv2; assert hasattr(cv2, 'optflow'), 'cv2 without contrib: opencv-python is shadowing opencv-contrib-python-headless'"
	@touch $(STAMP)

setup: $(STAMP)

lab: $(STAMP)
	$(PY) data_scripts/make_lab_dataset.py --root $(LAB) --scale $(SCALE) --workers $(WORKERS)

book: $(STAMP) lab
	$(PY) -m jupyter_book build . --warningiserror --keep-going
	@echo "Book built: $(CURDIR)/_build/html/index.html"

unit-test: $(STAMP)
	$(PY) -m pytest tests/ -q $(PYTEST_ARGS)

test: unit-test

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf _build .pytest_cache
