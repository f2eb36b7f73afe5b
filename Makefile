# simgate — the two commands of the README's Quick start, and their parts.
#   make demo   install what is missing, start emulated devices, show simgate at work
#   make test   the whole test suite (what CI runs)

CARGO ?= cargo
# Seconds the demo runs before stopping by itself (0: until Ctrl-C).
DEMO_SECONDS ?= 0

.PHONY: deps build lint test demo clean

deps:
	@tests/rig/deps.sh

build: deps
	$(CARGO) build --locked

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test: lint
	$(CARGO) test --locked

demo: build
	@DEMO_SECONDS=$(DEMO_SECONDS) tests/rig/demo.sh

clean:
	$(CARGO) clean
