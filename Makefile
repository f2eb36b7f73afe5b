# simgate — the two commands of the README's Quick start, and their parts.
#   make demo   install what is missing, start emulated devices, show simgate at work
#   make test   the whole test suite (what CI runs)
#   make deb    the gateway package, target/debian/simgate_<version>_<arch>.deb
#   make deb-check  build the package, install it here with dpkg, check it, purge it
#   make chaos  the chaos suite at length (tests/it/chaos.rs), printing its figures
#   make test-cluster  a fleet on a three-node RabbitMQ cluster, a node killed (tests/it/cluster.rs)
#   make fuzz   every fuzz target run long (FUZZ_RUNS=10000000 each, or FUZZ_SECONDS)

CARGO ?= cargo
# Seconds the demo runs before stopping by itself (0: until Ctrl-C).
DEMO_SECONDS ?= 0
# Kills in `make chaos`'s kill storm (`make test` runs 16); SIMGATE_CHAOS_SEED=N replays a run.
CHAOS_KILLS ?= 200

.PHONY: deps test-deps build-deps build lint test test-cluster chaos demo deb deb-check fuzz fuzz-seed clean

# Everything: building, the test rig and the demo (pcscd, vpcd, mosquitto).
deps:
	@tests/rig/deps.sh rig

# The rig plus the tests' second broker (RabbitMQ).
test-deps:
	@tests/rig/deps.sh test

# Building only: never vpcd or mosquitto (vpcd must not be on a production station).
build-deps:
	@tests/rig/deps.sh build

build: build-deps
	$(CARGO) build --locked

# Both builds: the default one (emulators, schema, fuzzing) and the gateway package's
# (`--no-default-features`, what `make deb` ships).
lint: build-deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --no-default-features --all-targets -- -D warnings

test: test-deps lint
	$(CARGO) test --locked
	$(CARGO) test --locked --no-default-features --lib

# The cluster test, ignored by `make test` (a three-node RabbitMQ cluster takes half a
# minute to start; about a minute in all on a 2-core machine). CI runs both.
test-cluster: test-deps
	$(CARGO) test --locked --test it cluster:: -- --ignored --nocapture

# The same chaos tests as in `make test`, one at a time, the kill storm CHAOS_KILLS long;
# the whole output in target/chaos.log, the figures (`chaos: ...` lines) shown.
chaos: deps
	@mkdir -p target
	@CHAOS_KILLS=$(CHAOS_KILLS) $(CARGO) test --locked --test it chaos:: -- --nocapture --test-threads 1 \
		> target/chaos.log 2>&1; st=$$?; \
		grep -E '^chaos:|^test result|^failures:|^    chaos::' target/chaos.log; \
		echo "(full output: target/chaos.log)"; exit $$st

demo: deps build
	@DEMO_SECONDS=$(DEMO_SECONDS) tests/rig/demo.sh

# The gateway package: the binary without the emulators, the man page and completions
# generated from it (`simgate generate`), packaged by cargo-deb (metadata in Cargo.toml).
deb: build-deps
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked
	$(CARGO) build --release --locked --no-default-features
	@rm -rf target/assets && mkdir -p target/assets/man
	target/release/simgate generate man --dir target/assets/man
	gzip -9n target/assets/man/*.1 target/assets/man/*.5
	target/release/simgate generate completions bash > target/assets/simgate.bash
	target/release/simgate generate completions zsh > target/assets/_simgate
	target/release/simgate generate completions fish > target/assets/simgate.fish
	$(CARGO) deb --no-build --locked
	@ls -l target/debian/simgate_*.deb

deb-check: deb
	@tests/rig/deps.sh deb
	@tests/rig/deb-check.sh

# Coverage-guided fuzzing with cargo-fuzz (fuzz/, its own workspace), one target at a
# time on its corpus under tests/fuzz/corpus/ (`make test` replays that corpus).
fuzz: build-deps
	@tests/fuzz/run.sh

# (Re)write the corpus seeds from devices/ and tests/fixtures (named by content hash).
fuzz-seed:
	$(CARGO) test --locked --lib fuzz::props::write_seed_corpus -- --ignored

clean:
	$(CARGO) clean
