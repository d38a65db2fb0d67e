# diva-signal: common tasks. `make help` lists them.

CARGO    ?= cargo
PORT     ?= 3903
BIN      := target/release/diva-signal
IMAGE    ?= diva-signal
# A static binary for the empty-root check and for containers.
HOST_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
STATIC_BIN  := target/$(HOST_TARGET)/release/diva-signal

.PHONY: help run build release static static-check lint test docker clean

help:
	@echo "make run       build release and run on port $(PORT) (PORT=... to change)"
	@echo "make test      lint (fmt, clippy) and all tests"
	@echo "make lint      cargo fmt --check and clippy with warnings as errors"
	@echo "make build     debug build"
	@echo "make release   optimised, stripped release build ($(BIN))"
	@echo "make static    statically linked release build ($(STATIC_BIN))"
	@echo "make static-check  the static binary runs in an empty chroot (needs root)"
	@echo "make docker    build the container image $(IMAGE) (needs a Docker engine)"

run: release
	PORT=$(PORT) ./$(BIN)

build:
	$(CARGO) build

release:
	$(CARGO) build --release
	@ls -l $(BIN)

static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(HOST_TARGET)
	@ls -l $(STATIC_BIN)

static-check: static
	bash .ci/static-check.sh $(STATIC_BIN)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: lint
	$(CARGO) test

docker:
	docker build -t $(IMAGE) .

clean:
	$(CARGO) clean
