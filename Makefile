# The two commands a new user needs; each sets everything up on a fresh machine.
#   make run    set up, prepare the offline data, run the default suite and the "+" ablation, build the leaderboard
#   make test   set up, then lint, type-check and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt
# what running needs, and what only the tests add (linters, the Ray and PostgreSQL extras, a browser)
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# Debian packages: real Fashion-MNIST for the offline data; Chromium for the leaderboard's browser test
RUN_APT := dataset-fashion-mnist
TEST_APT := chromium chromium-driver

.PHONY: setup setup-test system-deps data run test lint typecheck pytest perf bench-speed leaderboard screenshot clean

# --no-compile: byte-compiling all ~24k installed modules takes over a minute on one core; each process
# of a run compiles the few hundred modules it imports instead (the tests compile them all: see pytest)
# -qq: pip says nothing but errors (a build's notices and this machine's index warnings are pages long)
$(RUN_STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing bench into $(VENV) (versions pinned by $(CONSTRAINTS))"
	@$(BIN)/python -m pip install -qq --upgrade pip setuptools wheel
	@$(BIN)/python -m pip install -qq --no-compile -c $(CONSTRAINTS) -e .
	@touch $@

$(TEST_STAMP): $(RUN_STAMP)
	@echo "installing the test tools and the Ray and PostgreSQL extras"
	@$(BIN)/python -m pip install -qq --no-compile -c $(CONSTRAINTS) -e ".[dev,postgres,ray]"
	@touch $@

setup: $(RUN_STAMP)
	@$(MAKE) --no-print-directory system-deps PACKAGES="$(RUN_APT)"

setup-test: $(TEST_STAMP)
	@$(MAKE) --no-print-directory system-deps PACKAGES="$(RUN_APT) $(TEST_APT)"

# Installs the Debian packages when missing and we may (root with apt-get); otherwise says how.
system-deps:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "note: Debian packages missing:$$missing; install them with: sudo apt-get install$$missing"; \
	fi

data: setup
	$(BIN)/bench data prepare

run: data
	$(BIN)/bench run --suite default
	$(BIN)/bench run --suite plus-ablation
	$(BIN)/bench readme

leaderboard: setup
	$(BIN)/bench leaderboard

# the README's picture: the leaderboard's first screen at a laptop's size (headless Chromium, a test extra)
screenshot: setup-test
	$(BIN)/python -m bench_leaderboard.screenshot results/leaderboard/index.html results/leaderboard.png

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup-test
	$(BIN)/mypy

# The tests start hundreds of Python processes. Where PYTHONDONTWRITEBYTECODE is set (as on our
# machines), none of them caches what it compiles, so the installed modules are byte-compiled once
# here, on every core (a run of `bench` starts only a few processes and skips this).
COMPILED := $(VENV)/.compiled-stamp
$(COMPILED): $(TEST_STAMP)
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || echo "note: some installed modules did not byte-compile"
	touch $@

# --durations: the 20 slowest tests, printed at the end of every run
pytest: setup-test $(COMPILED)
	$(BIN)/python -m pytest --durations=20

test: lint typecheck pytest

# the harness's own speed: overhead vs a bare loop, hardware use, attention, decoding (results/perf/)
perf: setup
	$(BIN)/bench perf

bench-speed: setup
	$(BIN)/bench perf --only attention

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
