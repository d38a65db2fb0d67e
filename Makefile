# diva-signal: common tasks. `make help` lists them.

CARGO    ?= cargo
PORT     ?= 3903
BIN      := target/release/diva-signal
IMAGE    ?= diva-signal
# A static binary for the empty-root check and for containers: musl where its Rust target
# is installed (smaller, ~0.8 MB resident), else glibc linked statically.
HOST_TARGET   := $(shell rustc -vV | sed -n 's/^host: //p')
MUSL_TARGET   := $(subst -gnu,-musl,$(HOST_TARGET))
STATIC_TARGET := $(if $(shell rustup target list --installed 2>/dev/null | grep -x $(MUSL_TARGET)),$(MUSL_TARGET),$(HOST_TARGET))
STATIC_BIN    := target/$(STATIC_TARGET)/release/diva-signal

.PHONY: help run build release static static-check nginx-check cross-pi lint test e2e docker docker-check clean

help:
	@echo "make run       build release and run on port $(PORT) (PORT=... to change)"
	@echo "make test      lint (fmt, clippy) and all tests, with TLS and without (--no-default-features)"
	@echo "make lint      cargo fmt --check and clippy with warnings as errors"
	@echo "make e2e       browser test: headless Chromium chats over WebRTC on /demo, also relayed by coturn (installs chromium, coturn if missing)"
	@echo "make build     debug build"
	@echo "make release   optimised, stripped release build ($(BIN))"
	@echo "make static    statically linked release build ($(STATIC_BIN)), under 2 MiB too"
	@echo "make static-check  the static binary runs in an empty chroot (needs root)"
	@echo "make nginx-check  contrib/nginx.conf proxies wss:// to the server (installs nginx if missing)"
	@echo "make cross-pi  static builds for Raspberry Pi (aarch64, armv7) where those targets are installed (PI_REQUIRED=... to fail instead of skipping)"
	@echo "make docker    build the container image $(IMAGE) (needs a Docker engine)"
	@echo "make docker-check  replay the Dockerfile without Docker: its build stage from what it copies, then run the result"
	@echo "make bench     load test: diva-signal on CPU 0, bench/ load generator on CPU 1; one table (bench/run.sh)"
	@echo "make bench-peers   the same against matchbox_server too (installed into .bench/), side by side"
	@echo "make bench-smoke   a short bench run that fails on any error (CI)"
	@echo "make bench-hot-path  in-process cost of relaying a signal, stage by stage (no sockets)"
	@echo "make fuzz      run each fuzz target for FUZZ_SECONDS (default $(FUZZ_SECONDS)) s (nightly, cargo-fuzz)"
	@echo "make fuzz-smoke    each fuzz target for $(FUZZ_SMOKE_SECONDS) s, as CI does"
	@echo "make coverage  line coverage of src/ from the whole test suite (cargo-tarpaulin) into coverage/"

run: release
	PORT=$(PORT) ./$(BIN)

build:
	$(CARGO) build

# The stripped binary, TLS included, must stay under 2 MiB (issue 17): the release build, the
# static one and the Raspberry Pi ones.
MAX_BINARY_BYTES := 2097152
# $(1): a binary that must be smaller than MAX_BINARY_BYTES.
define check-size
	@ls -l $(1)
	@test $$(stat -c %s $(1)) -lt $(MAX_BINARY_BYTES) || { echo "$(1) is $(MAX_BINARY_BYTES) bytes or more"; exit 1; }
endef

release:
	$(CARGO) build --release
	$(call check-size,$(BIN))

static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(STATIC_TARGET)
	$(call check-size,$(STATIC_BIN))

static-check: static
	bash .ci/static-check.sh $(STATIC_BIN)

nginx-check: release
	bash .ci/nginx-check.sh $(BIN)

# Raspberry Pi: 64-bit (Pi 3/4/5 with a 64-bit OS) and 32-bit ARMv7 (Pi 2/3/4 with Raspberry Pi OS 32-bit).
# Default features, so TLS included: ring's C and assembly are built with the cross gcc
# (CC_<target>), which also links. A target in PI_REQUIRED is an error when it cannot be
# built (CI: aarch64); the others are skipped with a line saying why. Each binary must be
# under MAX_BINARY_BYTES, and runs `--version` under qemu-user when that is installed.
PI_TARGETS  ?= aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
PI_REQUIRED ?=

cross-pi:
	@built=0; for target in $(PI_TARGETS); do \
	  case " $(PI_REQUIRED) " in *" $$target "*) skip=false;; *) skip=true;; esac; \
	  if ! rustup target list --installed 2>/dev/null | grep -qx "$$target"; then \
	    echo "skip $$target: Rust target not installed (rustup target add $$target)"; \
	    $$skip || { echo "$$target is in PI_REQUIRED"; exit 1; }; continue; fi; \
	  gcc=$$(case $$target in aarch64*) echo aarch64-linux-gnu-gcc;; *) echo arm-linux-gnueabihf-gcc;; esac); \
	  if ! command -v $$gcc >/dev/null; then \
	    echo "skip $$target: cross compiler $$gcc missing (apt-get install gcc-$${gcc%-gcc})"; \
	    $$skip || { echo "$$target is in PI_REQUIRED"; exit 1; }; continue; fi; \
	  var=$$(echo $$target | tr 'a-z-' 'A-Z_'); cc_var=$$(echo $$target | tr '-' '_'); \
	  env CARGO_TARGET_$${var}_LINKER=$$gcc CC_$$cc_var=$$gcc AR_$$cc_var=$${gcc%-gcc}-ar \
	    $(CARGO) build --release --target $$target || exit 1; \
	  bin=target/$$target/release/diva-signal; ls -l $$bin; built=$$((built + 1)); \
	  test $$(stat -c %s $$bin) -lt $(MAX_BINARY_BYTES) || { echo "$$bin is $(MAX_BINARY_BYTES) bytes or more"; exit 1; }; \
	  qemu=qemu-$$(case $$target in aarch64*) echo aarch64;; *) echo arm;; esac); \
	  command -v $$qemu-static >/dev/null && qemu=$$qemu-static; \
	  if command -v $$qemu >/dev/null; then $$qemu $$bin --version || exit 1; \
	  else echo "not run: $$qemu(-static) missing (apt-get install qemu-user-static)"; fi; \
	done; \
	if [ $$built -eq 0 ]; then \
	  echo "No Raspberry Pi build was made: install the targets above, or build the image for the Pi with"; \
	  echo "  docker buildx build --platform linux/arm64,linux/arm/v7 -t diva-signal ."; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	# fuzz/ and bench/ are workspaces of their own: formatting only (their builds are slower).
	cd fuzz && $(CARGO) fmt --all -- --check
	cd bench && $(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	# Without TLS (the smallest build): it must build, lint clean, and refuse the TLS flags.
	$(CARGO) clippy --no-default-features --all-targets -- -D warnings

test: lint
	$(CARGO) test
	$(CARGO) test --no-default-features --lib

# End to end in a real browser (tests/e2e.rs). Installs Debian's chromium, and coturn for
# the relayed pair, if missing (needs root).
CHROMIUM := /usr/lib/chromium/chromium
e2e:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "$(CHROMIUM) is missing: installing Debian's chromium"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y chromium; \
	fi
	@if ! command -v turnserver >/dev/null; then \
	  echo "turnserver is missing: installing Debian's coturn"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y coturn; \
	fi
	$(CARGO) test --release --test e2e -- --ignored --test-threads=1

docker:
	docker build -t $(IMAGE) .

# No Docker engine needed: .ci/docker-build-check.sh reads the Dockerfile, builds its `build`
# stage in an empty directory from exactly what its COPY lines take (after .dockerignore), with
# its RUN commands and the host's toolchain, then runs the binary the image would hold.
docker-check:
	bash .ci/docker-build-check.sh

clean:
	$(CARGO) clean

# Fuzzing: cargo-fuzz (libFuzzer) targets in fuzz/, its own workspace, built in fuzz/target.
# New inputs go to fuzz/corpus/TARGET (not committed); the committed seeds in
# fuzz/seeds/TARGET are read as a second corpus. A crash stops make and leaves the input
# in fuzz/artifacts/TARGET/. Nightly is used when rustup has it; otherwise the stable
# toolchain is told to allow the nightly-only sanitizer flags (RUSTC_BOOTSTRAP=1).
FUZZ_TARGETS       := parse_call http_head rooms_ops frame_boundaries resp_decode
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_CARGO          = $(shell $(CARGO) +nightly --version >/dev/null 2>&1 && echo "$(CARGO) +nightly" || echo "RUSTC_BOOTSTRAP=1 $(CARGO)")
# --debug-assertions: overflow checks and debug_assert! on, as in tests.
FUZZ_BUILD_FLAGS   ?= --debug-assertions
# Longest input per target: a message of a few KiB (an SDP offer is ~4 KiB); a request
# head up to past MAX_HEAD_LEN (8 KiB) plus the piece-size prefix; an operation list;
# a few Redis replies.
FUZZ_MAX_LEN_parse_call := 8192
FUZZ_MAX_LEN_http_head  := 8400
FUZZ_MAX_LEN_rooms_ops  := 4096
FUZZ_MAX_LEN_frame_boundaries := 4096
FUZZ_MAX_LEN_resp_decode := 4096

fuzz-tools:
	@$(FUZZ_CARGO) fuzz --help >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz-build: fuzz-tools
	$(FUZZ_CARGO) fuzz build $(FUZZ_BUILD_FLAGS)

# $(1): seconds per target. libFuzzer's progress goes to fuzz/target/fuzz-TARGET.log;
# its final figures are shown, and on a crash the end of the log.
define run-fuzzers
	@set -e; for target in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$target for $(1) s"; \
	  mkdir -p fuzz/corpus/$$target; \
	  case $$target in \
	    parse_call) max_len=$(FUZZ_MAX_LEN_parse_call) ;; \
	    http_head) max_len=$(FUZZ_MAX_LEN_http_head) ;; \
	    frame_boundaries) max_len=$(FUZZ_MAX_LEN_frame_boundaries) ;; \
	    resp_decode) max_len=$(FUZZ_MAX_LEN_resp_decode) ;; \
	    *) max_len=$(FUZZ_MAX_LEN_rooms_ops) ;; \
	  esac; \
	  log=fuzz/target/fuzz-$$target.log; \
	  if $(FUZZ_CARGO) fuzz run $(FUZZ_BUILD_FLAGS) $$target fuzz/corpus/$$target fuzz/seeds/$$target -- \
	      -max_total_time=$(1) -max_len=$$max_len -timeout=10 -print_final_stats=1 >$$log 2>&1; then \
	    grep -e '^Done ' -e '^stat::number_of_executed_units' -e '^stat::new_units_added' $$log; \
	    grep -e '^#[0-9]*[[:space:]]*DONE' $$log | tail -n 1; \
	  else \
	    tail -n 60 $$log; echo "fuzz target $$target failed: see $$log and fuzz/artifacts/$$target/"; exit 1; \
	  fi; \
	done
endef

fuzz: fuzz-build
	$(call run-fuzzers,$(FUZZ_SECONDS))

fuzz-smoke: fuzz-build
	$(call run-fuzzers,$(FUZZ_SMOKE_SECONDS))

# Load tests (bench/run.sh says which scenarios); the generator is its own crate in bench/.
.PHONY: bench bench-peers bench-smoke bench-hot-path
bench:
	CARGO=$(CARGO) bash bench/run.sh

bench-peers:
	CARGO=$(CARGO) bash bench/run.sh --peers

# A short run of a few scenarios that fails on any error: proves on a fresh machine that
# the generator builds and drives the server (CI runs it; figures from it mean nothing).
# nginx-tls-closed-1k-w1 installs Debian's nginx-light when missing (as root).
bench-smoke:
	CARGO=$(CARGO) BENCH_STRICT=1 BENCH_REPEAT=1 BENCH_WARMUP=0.5 BENCH_DURATION=1 BENCH_LIMITS_WARMUP=0.5 \
	  BENCH_HOT_PATH_MESSAGES=20000 \
	  BENCH_SCENARIOS="start closed-1k-w1 closed-1k-w1-limits open-20k big-1k mid-1k flood-ping flood-ping-limits tls-closed-1k-w1 nginx-tls-closed-1k-w1 cluster-closed-1k-w1" \
	  bash bench/run.sh

# What reading, parsing, routing and framing a `signal` costs in process, without sockets.
bench-hot-path:
	$(CARGO) bench --bench hot_path

# Coverage: line coverage of src/ over the whole test suite (unit and integration tests;
# the browser test is #[ignore]d and not in it), with cargo-tarpaulin's LLVM engine on
# the stable toolchain, built in target/tarpaulin. HTML, JSON and a summary go to coverage/.
coverage-tools:
	@$(CARGO) tarpaulin --version >/dev/null 2>&1 || $(CARGO) install cargo-tarpaulin --locked

coverage: coverage-tools
	@mkdir -p coverage
	@status=0; $(CARGO) tarpaulin --engine llvm --target-dir target/tarpaulin --skip-clean --color never \
	  --include-files 'src/*' --no-fail-fast --timeout 300 \
	  --out Html --out Json --out Stdout --output-dir coverage >coverage/tarpaulin.log 2>&1 || status=$$?; \
	sed -n '/Coverage Results/,$$p' coverage/tarpaulin.log >coverage/summary.txt; \
	if [ ! -s coverage/summary.txt ]; then tail -n 40 coverage/tarpaulin.log; fi; \
	cat coverage/summary.txt; \
	echo "report: coverage/tarpaulin-report.html (log: coverage/tarpaulin.log)"; \
	exit $$status
