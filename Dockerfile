# monitoring-rs: a multi-stage build with a cached dependency layer and a
# small runtime image.
#
# Runs as non-root by default (the directory collector over a volume needs no
# more). The Kubernetes DaemonSet runs it as root: the kubelet writes container
# logs as root:root 0640, which only root (or CAP_DAC_READ_SEARCH) may read.

FROM rust:1.95-bookworm AS build
# fmt and clippy for the compose `test` and `lint` services.
RUN rustup component add rustfmt clippy
WORKDIR /src
# Dependencies change rarely: build them against stub sources first, so code
# changes only rebuild the crate itself.
# The test kit is a workspace member, so its manifest is needed to resolve
# the workspace (the daemon does not link it).
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml testkit/
RUN mkdir -p src benches testkit/src/bin \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs testkit/src/lib.rs \
    && echo 'fn main() {}' > testkit/src/bin/loadgen.rs \
    && for b in collector store api node cluster; do echo 'fn main() {}' > benches/$b.rs; done \
    && cargo build --release --locked --bin monitoring-rs \
    && rm -rf src benches testkit/src
COPY . .
RUN touch src/main.rs src/lib.rs testkit/src/lib.rs \
    && cargo build --release --locked --bin monitoring-rs \
    && mkdir -p /out/data \
    && cp target/release/monitoring-rs /out/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/monitoring-rs /monitoring-rs
# An empty data directory owned by the runtime user: a fresh named volume
# mounted here takes its ownership.
COPY --from=build --chown=65532:65532 /out/data /data
ENV DATA_DIRECTORY=/data \
    LISTEN=0.0.0.0:8000
EXPOSE 8000
# The binary is PID 1 and handles SIGTERM itself: it stops collecting,
# flushes the store (committing checkpoints) and exits.
ENTRYPOINT ["/monitoring-rs"]
