# runway: the README's commands. `make run` and `make test` do all their own set-up.

CARGO ?= cargo
AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/%2f
export AMQP_URL

.PHONY: run test test-faults test-tls test-cluster lint build broker bench clean fuzz man browser

## Build runway and run the demo operation of examples/demo in local mode.
run:
	$(CARGO) build --release -p runway-producer --bin runway
	cd examples/demo && ../../target/release/runway up

## Lint, make sure a RabbitMQ answers, then run every test; last, on a cluster of its own
## (which needs root), the cluster scenarios one after another: leader kill, CLI-node kill,
## rolling restart and minority partition.
test: lint broker python promtool browser
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast --exclude runway-tests
	$(CARGO) test -p runway-tests --no-fail-fast --test e2e --test serial --test tls
	$(CARGO) test -p runway-tests --test cluster

## All the cluster fault tests: start a three-node cluster (scripts/rabbitmq-cluster, ports
## 5681-5683), kill, stop, restart and partition its nodes under runners and CLIs, stop it;
## with the figure lines shown (`make test` runs them too, without).
test-cluster: build
	$(CARGO) test -p runway-tests --test cluster -- --test-threads=1 --nocapture

## The fault suite alone, with its figure lines: worker kills, poison messages, drain and the
## delivery limit (e2e `faults::`), then the scenarios that need the broker to themselves
## (restart, 10,000-job burst, consumer timeout, output flood; the `serial` test binary).
## `make test` runs all of it too.
test-faults: broker build
	$(CARGO) test -p runway-tests --test e2e faults:: -- --nocapture
	$(CARGO) test -p runway-tests --test serial -- --nocapture

## The TLS tests alone (tests/tls.rs): they start a RabbitMQ node of their own with a TLS
## listener (scripts/rabbitmq-tls, ports 5691-5693) and stop it at the end. `make test` runs
## them too, with every other test binary.
test-tls: build
	$(CARGO) test -p runway-tests --test tls

## promtool (Debian's prometheus package) for the deploy/ tests, as root on Debian; elsewhere
## those tests skip the promtool check with a note and still read the files as YAML.
.PHONY: promtool
promtool:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
		|| echo "note: promtool is not installed: the deploy tests read the Prometheus files as YAML only"

## Format check and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build:
	$(CARGO) build --workspace --bins

## Debian's chromium and chromium-driver, for the web view's browser test (e2e `ui::`);
## installed (as root) only when /usr/bin/chromium is missing.
browser:
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver -a -x /usr/bin/man || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver man-db)

## runway's man page, generated from its flags (clap_mangen): target/man/runway.1
## (read it with `man -l target/man/runway.1`).
man:
	$(CARGO) build -p runway-producer --bin runway
	mkdir -p target/man
	target/debug/runway man > target/man/runway.1

## The virtual environment of the Python example client (examples/python), with pika, for the
## e2e test `python_client`; a stamp file makes it idempotent.
PYTHON ?= python3
PIKA_VERSION = 1.4.4
.PHONY: python
python: target/venv/.pika-$(PIKA_VERSION)

target/venv/.pika-$(PIKA_VERSION):
	$(PYTHON) -m venv target/venv
	target/venv/bin/pip install --quiet --disable-pip-version-check pika==$(PIKA_VERSION)
	touch $@

## Start (and on a fresh Debian machine as root, install) RabbitMQ when none answers.
broker:
	scripts/ensure-rabbitmq

## The benchmark: runway's figures beside their ceilings, also in target/bench.json.
bench: broker
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p runway-bench

clean:
	$(CARGO) clean

## A three-node RabbitMQ cluster on 127.0.0.1:5681-5683 for the cluster tests (root, or the
## rabbitmq user); `scripts/rabbitmq-cluster stop` removes it. The broker on 5672 is left alone.
.PHONY: cluster
cluster:
	scripts/rabbitmq-cluster start

## Run each fuzz target for FUZZ_SECONDS (cargo-fuzz on the stable toolchain through
## RUSTC_BOOTSTRAP=1; installs cargo-fuzz when missing). A crash is left in fuzz/artifacts/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := decode_job decode_event decode_control fold
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$target && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target corpus/$$target seeds/$$target -- \
			-dict=protocol.dict -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
