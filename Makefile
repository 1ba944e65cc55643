# Two-stream ConvNets: the executable book.
#   make book   set up everything (venv, packages, lab data) and build the HTML book
#   make test   set up everything and run all tests: unit tests -> notebooks (nbval) -> book build -> browser check
#   make jupyter  set up, make the lab data, and open the book in JupyterLab (prints the URL with its token)
# Set-up is idempotent: a second run only redoes what changed.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
DATA    ?= data
SCALE   ?= small
WORKERS ?= 2
PYTEST_ARGS ?=
# Book execution: empty = as _config.yml says ("off": the chapter notebooks are committed executed, the build
# only renders them). EXECUTE=force re-executes every notebook during the build (cache|auto also accepted).
EXECUTE ?=
SCRATCH ?= /tmp/scratchbook

.PHONY: jupyter kernel-user setup system book book-html vendor notebook-test chapters-test execute browser-check book-selftest test unit-test lab bench gpu-check test-real-branch test-gpu-profile seeds solutions clean help

help:
	@sed -n '1,5p' Makefile

# The project's Jupyter kernel: the chapters ask for kernel KERNEL_NAME, registered inside the venv (--sys-prefix),
# where the venv's JupyterLab, nbval and the book build find it. `make kernel-user` registers it for the user too,
# so a Jupyter installed elsewhere runs the chapters in this venv (re-run it from the checkout you want it to use).
KERNEL_NAME := twostream
KERNEL_DISPLAY := Python (twostream_lib)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --disable-pip-version-check -e '.[book,test]'
	@$(PY) -c "import cv2; assert hasattr(cv2, 'optflow'), 'cv2 without contrib: opencv-python is shadowing opencv-contrib-python-headless'"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL_NAME) --display-name "$(KERNEL_DISPLAY)"
	@touch $(STAMP)

kernel-user: $(STAMP)
	$(PY) -m ipykernel install --user --name $(KERNEL_NAME) --display-name "$(KERNEL_DISPLAY)"

# jupyter: JupyterLab on the book (the chapters' data first: `make lab`). It prints the URL with its token; open it
# in a browser. On a remote machine: `make jupyter JUPYTER_ARGS=--no-browser`, and on your laptop
# `ssh -N -L 8888:127.0.0.1:8888 you@remote` (then open the printed http://127.0.0.1:8888/lab?token=... locally).
# As root (containers, cloud machines) JupyterLab needs --allow-root: added when you are root.
JUPYTER_PORT ?= 8888
JUPYTER_ARGS ?=
jupyter: lab
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --ip=127.0.0.1 --port=$(JUPYTER_PORT) \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(JUPYTER_ARGS) book/intro.ipynb

# Debian packages (chromium + chromium-driver for the rendered-book check, unar for RAR extraction, npm where no
# Node.js is installed), each only when its command is missing: see tools/install_system_deps.sh.
system:
	@bash tools/install_system_deps.sh

setup: $(STAMP) system

# lab: the lab datasets of SCALE (tiny|small|full) in $(DATA)/lab/$(SCALE)/ and their DIS-flow caches (forward and
# backward flow) in $(DATA)/cache/$(SCALE)/ -- what the chapters use. Idempotent (finished videos are skipped).
lab: $(STAMP)
	$(PY) -m twostream_lib lab --data $(DATA) --scale $(SCALE) --workers $(WORKERS)

# --- the book -------------------------------------------------------------------------------------------------
# vendor: require.js, the ipywidgets HTML manager and MathJax 3 from the npm registry (pinned, sha512-checked) into
#   book/_static/vendor/ (gitignored) so pages work offline; a no-op when present. Redo: rm -rf book/_static/vendor
vendor:
	@bash tools/vendor_js.sh book/_static/vendor

# book-html: Jupyter Book 1 build (tools/build_book.py: vendor, -W --keep-going, nb_execution_raise_on_error).
book-html: $(STAMP) vendor
	EXECUTE=$(EXECUTE) $(PY) tools/build_book.py

# book: set up, then build. Lab data is only needed when the build executes notebooks (EXECUTE=force|cache|auto).
book: setup $(if $(EXECUTE),lab) book-html

# notebook-test: every chapter notebook executes (nbval, lax: only `# NBVAL_CHECK_OUTPUT` cells are compared), two
# at a time with one core each, each after the chapters whose runs it reuses (tools/lanes.py).
notebook-test: setup
	@if ls book/*.ipynb >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory lab || exit $$?; \
	  $(PY) tools/lanes.py test --pytest-args "$(PYTEST_ARGS)"; \
	else echo "notebook-test: no book/*.ipynb yet, skipped"; fi

# chapters-test: notebook-test with test-real-branch and test-gpu-profile in the same two lanes (make test).
chapters-test: setup lab
	$(PY) tools/lanes.py test --rehearsals --pytest-args "$(PYTEST_ARGS)"

# execute: every chapter executed in place, as committed (tools/lanes.py: two at a time, one core each, the way
# make test executes them). From scratch: remove runs/small first (about 16 min on 2 cores).
execute: setup lab
	$(PY) tools/lanes.py execute $(CHAPTERS)

# browser-check: build, then open every page of _build/html/book/ (and the root index) in offline headless
# Chromium: images, figures, jshtml animations, widgets, MathJax, console errors, no network; screenshots go to
# _build/screenshots/. Another build: pytest book_tests/ --book-source DIR (or --book-html DIR).
browser-check: setup book-html
	$(PY) -m pytest book_tests/ -q -p no:cacheprovider $(PYTEST_ARGS)

# book-selftest: a scratch copy of the book in $(SCRATCH) with one notebook holding a figure, an animation, a
# widget and math (tools/scratch_book.py), executed, built and checked: proves the browser check can pass.
book-selftest: setup
	$(PY) tools/scratch_book.py --dest $(SCRATCH)
	$(PY) -m pytest book_tests/ --book-source $(SCRATCH) -q -p no:cacheprovider

# unit-test: two pytest workers (pytest-xdist): the tests are independent, and many wait on subprocesses.
unit-test: setup
	$(PY) -m pytest tests/ -q -n 2 $(PYTEST_ARGS)

# Runs in this order and stops at the first failure.
test: unit-test chapters-test browser-check

bench: $(STAMP)
	$(PY) benchmarks/run.py $(ARGS)

# test-real-branch: every chapter with DATA="ucf101"/"hmdb51" on miniatures of the real layouts made from lab clips,
# with a tiny schedule and DEVICE="auto" as shipped; chapter 4's run trained first from the command line, which the
# chapter must reuse (tools/real_branch.py). test-gpu-profile: chapters 3-6 with PROFILE="gpu" on the CPU, lab tiny
# scale, tiny schedule: every row only the gpu profile runs. Both part of `make test` (a few minutes each).
test-real-branch: $(STAMP)
	$(PY) tools/real_branch.py --mode real $(ARGS)

test-gpu-profile: $(STAMP)
	$(PY) tools/real_branch.py --mode gpu-profile $(ARGS)

# gpu-check: on a machine with one CUDA GPU (~8 min): the CUDA unit tests, the GPU benchmark section (into
# BENCHMARKS.md) and chapters 3-4 with DEVICE="cuda" (it makes the lab data itself). Without CUDA it fails at
# once, saying so, before building anything.
gpu-check: $(STAMP)
	$(PY) tools/gpu_check.py --data $(DATA) $(ARGS)

# seeds: chapters 3-6 executed again with other seeds (SEEDS), runs in runs/seed<k>/, scorecard entries in
# book/scorecard/seeds/<k>/ ("What reproduced" shows them beside the book's own run); one seed per lane, one core
# each (tools/lanes.py).
SEEDS ?= 1 2
seeds: $(STAMP)
	$(MAKE) --no-print-directory lab SCALE=small
	$(PY) tools/lanes.py seeds --seeds $(SEEDS)

# solutions: the exercises that train runs (chapters 3-5) or score for minutes (chapters 6, 7), solved by
# tools/solutions.py outside CI (about 45 min on 2 cores): their numbers go to book/solutions/<chapter>.json,
# which the chapters glue into the solutions' text. Re-run it when the chapters' runs change, then `make execute`.
SOLUTION_CHAPTERS ?=
solutions: $(STAMP)
	$(MAKE) --no-print-directory lab SCALE=small
	$(PY) tools/solutions.py $(if $(SOLUTION_CHAPTERS),--chapters $(SOLUTION_CHAPTERS))

clean:
	rm -rf _build .pytest_cache
