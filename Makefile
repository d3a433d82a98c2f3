# The two commands of the README: `make run` and `make test`.

EVENTS := tests/fixtures/events
# The sample events in the order a shop would send them.
LIFECYCLE := order_created order_paid order_preparing shipment_created \
	shipment_in_transit delivery_delayed out_for_delivery \
	delivery_attempt_failed delivered return_requested return_approved \
	return_received refund_created payment_failed partially_shipped \
	backordered items_cancelled order_cancelled
PLUGIN := target/wasm32-wasip2/plugin/standard_lifecycle.wasm

.PHONY: run test lint plugins target postgres python-deps check-plugin load bench benchmarks extism-guest

target:
	rustup target add wasm32-wasip2

## Build the plugins as components (wasm32-wasip2, size-optimised).
plugins: target
	cargo build --target wasm32-wasip2 --profile plugin \
		-p standard-lifecycle -p vip-concierge -p configurable

## Start the service (SQLite, 127.0.0.1:8080, emails in ./outbox) and drive
## a demo shop through its API; it keeps serving until Ctrl-C.
run: plugins
	cargo build -p tidings-host
	./target/debug/tidings demo

## Run standard-lifecycle on every sample event with the local runner.
check-plugin: plugins
	cargo build -p tidings-host
	./target/debug/tidings plugin check $(PLUGIN)
	./target/debug/tidings plugin run $(PLUGIN) \
		$(foreach e,$(LIFECYCLE),--event $(EVENTS)/$(e).json)

## The tests talk to PostgreSQL on 127.0.0.1:5432; start the local cluster if it is down.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start || \
		echo "warning: PostgreSQL is not running on 127.0.0.1:5432; the PostgreSQL tests will fail"

## The SMTP tests run a real SMTP server (aiosmtpd) and check DKIM with dkimpy.
python-deps:
	python3 -m pip install --quiet aiosmtpd dkimpy

## The whole test suite: SDK, plugins (native), host, end-to-end.
test: target postgres python-deps
	cargo test --workspace

## Formatting and lints, as CI checks them.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

## End-to-end throughput, ingest latency and tenant density of the release
## binary (SQLite and PostgreSQL, file and SMTP transports); prints the
## tables and writes them into BENCHMARKS.md. Takes several minutes.
load: plugins postgres python-deps
	cargo build --release -p tidings-host
	cargo run --release -p tidings-load -- all --write BENCHMARKS.md

## standard-lifecycle as an Extism plugin, for the decision-cost bench. Its own
## workspace (never built by `cargo test --workspace`) and target directory.
extism-guest:
	rustup target add wasm32-unknown-unknown
	cargo build --manifest-path tests/guests/extism-rule/Cargo.toml \
		--target wasm32-unknown-unknown --release --target-dir target/extism

## Decision cost: the same rule natively, in Tidings, in a naive wasmtime host
## and in Extism, side by side in one run; prints a markdown table.
bench: plugins extism-guest
	cargo bench -p tidings-bench

## Every benchmark: decision cost, then end to end and density.
benchmarks: bench load
