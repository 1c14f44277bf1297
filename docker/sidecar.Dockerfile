# enkf-sidecar: credential rotation and scheduled assimilation, as a non-root container.
#
# NOT BUILT OR TESTED HERE: the development machine has no Docker engine. The tested steps
# are `cargo build --release -p enkf-sidecar` (scripts/package.sh) with Rust 1.95 and the
# Debian 12 runtime libraries the Debian package depends on (libc6, libgcc-s1, libssl3:
# computed by dpkg-shlibdeps). Keep them in step.
#
#   docker build -f docker/sidecar.Dockerfile -t pg_enkf/sidecar .

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:12.12-slim

FROM ${RUST_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY extension extension
COPY sidecar sidecar
COPY sql sql
RUN cargo build --release --locked -p enkf-sidecar && strip target/release/enkf-sidecar

# debian-slim rather than distroless/cc: the sidecar links OpenSSL (native-tls to PostgreSQL),
# which distroless/cc lacks.
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 enkf && useradd --system --uid 10001 --gid enkf --no-create-home --home-dir /nonexistent enkf
COPY --from=builder /src/target/release/enkf-sidecar /usr/bin/enkf-sidecar
COPY sidecar/enkf-sidecar.example.toml /etc/enkf-sidecar/enkf-sidecar.toml
USER 10001:10001
EXPOSE 9187
# /healthz and /metrics must listen beyond the container's loopback.
ENV ENKF_SIDECAR_HTTP_LISTEN=0.0.0.0:9187
ENTRYPOINT ["/usr/bin/enkf-sidecar", "--config", "/etc/enkf-sidecar/enkf-sidecar.toml"]
CMD ["run"]
