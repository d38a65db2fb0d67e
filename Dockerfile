# diva-signal container image: one static binary on `scratch`.
#
#   docker build -t diva-signal .
#   docker run -d -p 3903:3903 diva-signal
#
# Multi-architecture (Raspberry Pi included), with buildx and QEMU:
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 -t diva-signal .

# Build stage: Alpine's Rust links against musl, statically, for whatever platform it runs on.
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
# The whole context, less what .dockerignore keeps out (build output, git's data): Cargo reads
# more than src/ (benches/ for the [[bench]] in Cargo.toml, for one), and a list of paths here
# would drift from what Cargo.toml needs. `make docker-check` replays this stage without Docker.
COPY . ./
RUN cargo build --release --locked \
 && cp target/release/diva-signal /diva-signal \
 && /diva-signal --version

# Final stage: nothing but the binary.
FROM scratch
COPY --from=build /diva-signal /diva-signal
# nobody:nogroup; the server needs no files and no privileges.
USER 65534:65534
# No BIND_IP: as the original, the server listens on IPv6 and IPv4, or on IPv4 alone in a
# container without IPv6.
ENV PORT=3903
EXPOSE 3903
# No curl in `scratch`: the binary checks its own /health (on PORT, via loopback).
HEALTHCHECK --interval=30s --timeout=5s --start-period=2s --retries=3 \
  CMD ["/diva-signal", "--healthcheck"]
# The binary handles SIGTERM itself as PID 1: clients get a close frame, exit code 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/diva-signal"]
