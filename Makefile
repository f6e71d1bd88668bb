# pushcascade: every set-up step lives here; nothing depends on what was installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements-dev.lock
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)

.PHONY: install demo test test-faults test-unit lint bench bench-tools load-generators clean

$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  (echo "pushcascade needs Python >= 3.11 (set PYTHON=...)"; exit 1)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(BIN)/pushcascade demo

# three test processes (--dist loadfile: a file's tests share a process, so a fault module's
# running loop is shared in file order): most tests wait on brokers, deadlines and processes
test: install load-generators
	$(BIN)/pytest -q -n 3 --dist loadfile

# the compiled load generators whose harnesses the suite checks (tests/integration/
# test_gateway_bench.py, test_dispatch_bench.py); where they cannot be installed, those tests
# skip and say why
load-generators:
	-@command -v wrk >/dev/null && command -v h2load >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive timeout 300 $(MAKE) -s bench-tools >/dev/null 2>&1 || \
	  echo "wrk and h2load could not be installed: the benchmark harness tests will skip"

test-faults: install
	$(BIN)/pytest -q -n 3 --dist loadfile -m faults

test-unit: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check schemas streams connectors tests
	$(BIN)/mypy schemas streams connectors

bench: install
	$(BIN)/pushcascade bench router

# compiled load generators for the HTTP benchmarks (bench gateway): Debian's wrk and h2load
bench-tools:
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
	  (apt-get install -y -q wrk nghttp2-client || sudo apt-get install -y -q wrk nghttp2-client)

clean:
	rm -rf $(VENV) var build *.egg-info
