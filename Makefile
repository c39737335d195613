# acento: the two commands of the README's Quick start are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help run test test-fast bench compare compare-all final-model benchmark-corpus scale-corpus clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

# The venv is rebuilt only when requirements.txt or pyproject.toml change. Unpacking the wheels is quick;
# pip's byte-compiling of them on one core is not (80 of 120 s here), so compileall does it on every core
# (an optimisation only: like pip, it skips the few files meant for other Pythons, e.g. torch's py312 ones).
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -r requirements.txt
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)  ## create .venv, install pinned requirements, run the DVC pipeline on the bundled sample
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/dvc repro
	@$(BIN)/python scripts/summary.py

test: $(STAMP)  ## run the whole test suite (unit and end-to-end)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## unit tests only (skips the end-to-end DVC run)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not e2e"

bench: $(STAMP)  ## benchmarks: features, the training loop against its floors, prediction, CLI start-up, service load: bench/results.md
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/bench.py

compare: $(STAMP)  ## LSTM vs GRU cross-validated over speakers (default preset, 3 training seeds): reports/compare.{md,json,png}
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/python -m acento.evaluation.compare --seeds 1 2 3

compare-all: $(STAMP)  ## the same for the original study's presets (basic, deep, advanced) and the default
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/python -m acento.evaluation.compare --presets basic deep advanced default

final-model: $(STAMP)  ## the deployable model: one network per fold as one ensemble, models/final.pt (predict/serve use it)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m acento.training.final

# Not committed: made on demand (about 3 min on 2 cores) with Debian's espeak-ng, sox and LAME.
benchmark-corpus: $(STAMP)  ## the benchmark corpus for choosing defaults, with its oracle ceiling: data/benchmark/
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null || { echo "error: needs espeak-ng and sox: apt-get install espeak-ng sox libsox-fmt-mp3" >&2; exit 2; }
	$(BIN)/python scripts/make_sample_corpus.py --design benchmark --oracle data/benchmark/oracle.tsv
	$(BIN)/python scripts/oracle_ceiling.py data/benchmark/oracle.tsv | tee data/benchmark/ceiling.txt

# Not committed: a release of real size and shape whose clips are hard links to the sample's (seconds, no disk).
CLIPS ?= 100000
scale-corpus: $(STAMP)  ## a Common Voice-size release from the sample's clips, CLIPS=100000 validated: data/scale/
	$(BIN)/python scripts/make_scale_corpus.py --clips $(CLIPS) --out data/scale

clean:  ## remove the venv, extracted data and DVC outputs (the sample archive stays)
	rm -rf $(VENV) data/raw data/features/*.h5 data/prepared/*.tsv models/*.pt .pytest_cache build
