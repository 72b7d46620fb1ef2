# syntax=docker/dockerfile:1
#
# kv-connect-server image: a multi-stage build of the stock binary (default features: sqlite,
# redb, memory and postgres engines, backups) on a small runtime image without a shell.
#
#   docker build -t kv-connect-server .
#   docker run -d -p 4512:4512 -v kv-data:/data -e DENO_KV_ACCESS_TOKEN=<long random token> \
#       kv-connect-server
#
# - Runs as the non-root user 65532 ("nonroot"); the database lives in the /data volume
#   (/data/data.db, the sqlite engine). A bind-mounted host folder must be writable by 65532.
# - Listens on 0.0.0.0:4512. HEALTHCHECK runs `kv-connect-server healthcheck`, which GETs
#   /healthz on that port (the image has no curl).
# - ENTRYPOINT is the binary in exec form, so `docker stop` delivers SIGTERM to it directly and
#   it shuts down gracefully: drains requests for up to KV_CONNECT_SHUTDOWN_TIMEOUT seconds (8
#   here, within `docker stop`'s default 10 s), ships the backup, closes the database. Raise
#   both together (`docker run --stop-timeout`, compose `stop_grace_period`) if needed.
# - Arguments after the image name replace CMD: this server's own command line
#   (`serve --backup-to s3://...`) or denokv's (`--sqlite-path /data/denokv.sqlite serve
#   --access-token ...`), so the image is a drop-in for ghcr.io/denoland/denokv.
# - RUST_VERSION is the toolchain the project is tested with (MSRV: rust-version in Cargo.toml).
# - kv-connect-server/tests/container.rs checks this file against the binary: the ENTRYPOINT,
#   CMD and HEALTHCHECK argument vectors parse, and the paths and port below are what the
#   binary resolves.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kv-connect-server \
 && install -D -m 0755 target/release/kv-connect-server /out/kv-connect-server \
 && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="kv-connect-server" \
      org.opencontainers.image.description="Self-hostable Deno KV backend (KV Connect server)"
COPY --from=builder /out/kv-connect-server /usr/local/bin/kv-connect-server
COPY --from=builder --chown=65532:65532 /out/data /data
ENV KV_CONNECT_PATH=/data/data.db \
    KV_CONNECT_ADDR=0.0.0.0:4512 \
    KV_CONNECT_SHUTDOWN_TIMEOUT=8
VOLUME ["/data"]
WORKDIR /data
EXPOSE 4512
USER 65532:65532
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/kv-connect-server", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/kv-connect-server"]
CMD ["serve"]
