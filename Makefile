# diva-signal: common tasks. `make help` lists them.

CARGO    ?= cargo
PORT     ?= 3903
BIN      := target/release/diva-signal
IMAGE    ?= diva-signal
# A static binary for the empty-root check and for containers.
HOST_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
STATIC_BIN  := target/$(HOST_TARGET)/release/diva-signal

.PHONY: help run build release static static-check nginx-check cross-pi lint test e2e docker clean

help:
	@echo "make run       build release and run on port $(PORT) (PORT=... to change)"
	@echo "make test      lint (fmt, clippy) and all tests"
	@echo "make lint      cargo fmt --check and clippy with warnings as errors"
	@echo "make e2e       browser test: headless Chromium chats over WebRTC on /demo (installs chromium if missing)"
	@echo "make build     debug build"
	@echo "make release   optimised, stripped release build ($(BIN))"
	@echo "make static    statically linked release build ($(STATIC_BIN))"
	@echo "make static-check  the static binary runs in an empty chroot (needs root)"
	@echo "make nginx-check  contrib/nginx.conf proxies wss:// to the server (installs nginx if missing)"
	@echo "make cross-pi  static builds for Raspberry Pi (aarch64, armv7) where those targets are installed"
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

nginx-check: release
	bash .ci/nginx-check.sh $(BIN)

# Raspberry Pi: 64-bit (Pi 3/4/5 with a 64-bit OS) and 32-bit ARMv7 (Pi 2/3/4 with Raspberry Pi OS 32-bit).
PI_TARGETS ?= aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf

cross-pi:
	@built=0; for target in $(PI_TARGETS); do \
	  if ! rustup target list --installed 2>/dev/null | grep -qx "$$target"; then \
	    echo "skip $$target: Rust target not installed (rustup target add $$target)"; continue; fi; \
	  linker=$$(case $$target in aarch64*) echo aarch64-linux-gnu-gcc;; *) echo arm-linux-gnueabihf-gcc;; esac); \
	  if ! command -v $$linker >/dev/null; then \
	    echo "skip $$target: linker $$linker missing (apt-get install gcc-$${linker%-gcc})"; continue; fi; \
	  var=CARGO_TARGET_$$(echo $$target | tr 'a-z-' 'A-Z_')_LINKER; \
	  env $$var=$$linker $(CARGO) build --release --target $$target || exit 1; \
	  ls -l target/$$target/release/diva-signal; built=$$((built + 1)); \
	  qemu=qemu-$$(case $$target in aarch64*) echo aarch64;; *) echo arm;; esac)-static; \
	  if command -v $$qemu >/dev/null; then $$qemu target/$$target/release/diva-signal --version || exit 1; fi; \
	done; \
	if [ $$built -eq 0 ]; then \
	  echo "No Raspberry Pi build was made: install the targets above, or build the image for the Pi with"; \
	  echo "  docker buildx build --platform linux/arm64,linux/arm/v7 -t diva-signal ."; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: lint
	$(CARGO) test

# End to end in a real browser (tests/e2e.rs). Installs Debian's chromium if missing (needs root).
CHROMIUM := /usr/lib/chromium/chromium
e2e:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "$(CHROMIUM) is missing: installing Debian's chromium"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y chromium; \
	fi
	$(CARGO) test --release --test e2e -- --ignored --test-threads=1

docker:
	docker build -t $(IMAGE) .

clean:
	$(CARGO) clean
