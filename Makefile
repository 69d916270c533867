# snapdeploy: the commands a newcomer needs. See README.md.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
VCSIM := $(BIN)/vcsim
STATE_DIR ?= .state

.PHONY: install run test lint bench chaos clean docker-compose

install: $(BIN)/snapdeploy $(VCSIM) docker-compose

# docker-compose (Debian's package) validates docker-compose.yml in the tests.
docker-compose:
	@command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq docker-compose; \
	  else echo "install docker-compose (apt-get install docker-compose)" >&2; exit 1; fi; }

$(BIN)/snapdeploy: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(VCSIM): tools/vcsim/main.go tools/vcsim/go.mod tools/vcsim/go.sum | $(BIN)/snapdeploy
	cd tools/vcsim && go build -o ../../$(VCSIM) .

run: install
	$(BIN)/snapdeploy up --state-dir $(STATE_DIR) --gateway-listen 127.0.0.1:8080

test: install
	$(BIN)/ruff check proto shared services tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check proto shared services tests bench
	$(BIN)/mypy

# Full-size benchmarks (several minutes), then BENCHMARKS.md and its plot.
bench: install
	$(BIN)/python -m bench.eventstore
	$(BIN)/python -m bench.placement
	$(BIN)/python -m bench.deploys
	$(BIN)/python -m bench.report

# The fault harness, long: every process SIGKILLed five times during a stream of deploys
# (about 5 minutes). `make test` runs one round. The report feeds README.md's figures.
chaos: install
	$(BIN)/python -m tests.harness.chaos --rounds 5 --state-dir .chaos \
	  --report bench/results/chaos.json

clean:
	rm -rf $(VENV) $(STATE_DIR) .chaos
