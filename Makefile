# steward — the two commands of the quick start are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
STATE ?= .steward/demo.db

.PHONY: demo demo-images demo-database swarm prometheus postgres chromium build test test-unit schema bench fmt lint clean-demo

## Run the controller on the local demo stack (sets up what is missing first).
demo: swarm demo-images demo-database build
	@echo "steward: demo stack in manifests/demo, state in $(STATE)"
	@echo "steward: dashboard on http://127.0.0.1:9469/ ; in another terminal: ./target/debug/steward --state $(STATE) status   (or: events --follow)"
	@# The demo's secret: random, made once beside the state (never committed), kept across runs.
	@mkdir -p $(dir $(STATE)) && test -s $(STATE).api-key || (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > $(STATE).api-key)
	STEWARD_DEMO_API_KEY="$$(cat $(STATE).api-key)" ./target/debug/steward --state $(STATE) run manifests/demo

## The demo's PostgreSQL primary and replica (127.0.0.1:15433/15434) and its database.
demo-database:
	@scripts/demo-database.sh

## Initialize a single-node swarm if the engine is not in swarm mode.
swarm:
	@scripts/ensure-swarm.sh

## Build the demo images taxcollector-demo:{v1,v2,broken,unhealthy} locally (no registry).
demo-images:
	@scripts/demo-images.sh

## A Prometheus of our own on 127.0.0.1:19090 (Debian's package), scraping file_sd targets
## that tests register; rollout analysis tests query it.
prometheus:
	@scripts/ensure-prometheus.sh

## PostgreSQL of our own on 127.0.0.1:15432 (Debian's package) for the PostgreSQL store tests,
## and a primary (15433) with a streaming replica (15434) for the Database kind's tests.
postgres:
	@scripts/ensure-postgres.sh
	@scripts/ensure-postgres-replica.sh >/dev/null

## Debian's chromium, for the dashboard's end-to-end test.
chromium:
	@scripts/ensure-chromium.sh

build:
	$(CARGO) build -p steward

## Everything the tests need, then every test. STEWARD_REQUIRE_SERVICES=1 turns a skipped
## service-backed test into a failure (CI sets it).
test: swarm demo-images prometheus postgres chromium build
	$(CARGO) test --workspace --no-fail-fast

## Fast tests only (no Docker needed).
test-unit:
	$(CARGO) test -p steward-core -p steward-spec -p steward-manifest -p steward-schedule -p steward-database -p steward-plan -p steward-store -p steward-controller -p demo-app

## Regenerate the committed JSON Schema (a test fails when it is stale).
schema:
	$(CARGO) run -q -p steward -- schema > manifests/schema/steward.schema.json

## Benchmarks; results are recorded in docs/BENCHMARKS.md.
bench: swarm demo-images postgres
	$(CARGO) bench -p steward-plan --bench plan
	$(CARGO) bench -p steward-schedule --bench plan
	scripts/bench-swarm.sh
	scripts/bench-database.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Remove the demo stack's services and jobs (only those steward owns for stack "demo").
clean-demo:
	docker service ls -q --filter label=steward.io/stack=demo | xargs -r docker service rm
	docker service ls -q --filter label=steward.io/job-stack=demo | xargs -r docker service rm
	docker secret ls -q --filter label=steward.io/stack=demo | xargs -r docker secret rm
	docker secret ls -q --filter label=steward.io/job-stack=demo | xargs -r docker secret rm
	docker network ls -q --filter label=steward.io/stack=demo | xargs -r docker network rm || true
