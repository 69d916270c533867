# snapdeploy: the commands a newcomer needs. See README.md.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
VCSIM := $(BIN)/vcsim
GUEST := $(VENV)/share/snapdeploy-guest
STATE_DIR ?= .state

.PHONY: install run test lint bench bench-dataplane chaos clean docker-compose kvm-packages \
  browser-packages

install: $(BIN)/snapdeploy $(VCSIM) $(GUEST)/root.qcow2 docker-compose browser-packages

# docker-compose (Debian's package) validates docker-compose.yml in the tests.
docker-compose:
	@command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq docker-compose; \
	  else echo "install docker-compose (apt-get install docker-compose)" >&2; exit 1; fi; }

# The web console's browser tests drive Debian's headless Chromium through its chromedriver
# (Selenium, from the dev extras).
BROWSER_PACKAGES := chromium chromium-driver
browser-packages:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES); \
	  else echo "install the browser packages (apt-get install $(BROWSER_PACKAGES))" >&2; \
	    exit 1; fi; fi

# KVM's data plane, from Debian: a private libvirt daemon with QEMU (TCG) and qemu-img, the
# cloud kernel and busybox the demo guest is built from, what libvirt-python builds
# against, and jq (the README's quick start reads the API's answers with it). Without libvirt-daemon-system the users libvirt's QEMU driver looks up at start
# do not exist: they are made here.
KVM_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 \
  qemu-utils linux-image-cloud-amd64 busybox-static libvirt-dev pkg-config jq
kvm-packages:
	@missing=; for tool in libvirtd qemu-img qemu-io qemu-system-x86_64 busybox pkg-config jq; do \
	  command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ] || ! ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 \
	    || ! pkg-config --exists libvirt; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $(KVM_PACKAGES); \
	  else echo "install the KVM packages (apt-get install $(KVM_PACKAGES))" >&2; exit 1; fi; fi
	@if [ "$$(id -u)" = 0 ]; then \
	  getent group kvm >/dev/null || groupadd -r kvm; \
	  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu; \
	  id -u libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm \
	    -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu; fi

$(BIN)/snapdeploy: pyproject.toml | kvm-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(VCSIM): tools/vcsim/main.go tools/vcsim/go.mod tools/vcsim/go.sum | $(BIN)/snapdeploy
	cd tools/vcsim && go build -o ../../$(VCSIM) .

# The demo guest a KVM VM boots, built from the packages above (see tools/guest/build.sh).
$(GUEST)/root.qcow2: tools/guest/build.sh tools/guest/init | $(BIN)/snapdeploy kvm-packages
	tools/guest/build.sh $(GUEST)

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
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.report

# KVM's data plane: old path (export, copy back) against seeding once, on disks of 1 and 4
# GiB filled with data; about 13 minutes and 16 GiB written at its peak, so on its own.
bench-dataplane: install
	$(BIN)/python -m bench.dataplane
	$(BIN)/python -m bench.report

# The fault harness, long: every process SIGKILLed five times during a stream of deploys
# (about 5 minutes). `make test` runs one round. The report feeds README.md's figures.
chaos: install
	rm -rf .chaos  # each run from a clean stack: the last run's VMs would be synced away
	$(BIN)/python -m tests.harness.chaos --rounds 5 --state-dir .chaos \
	  --report bench/results/chaos.json

clean:
	rm -rf $(VENV) $(STATE_DIR) .chaos
