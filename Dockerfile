# syntax=docker/dockerfile:1
# aside image: cargo-chef dependency layer, release build, distroless runtime (no shell, non-root, read-only rootfs OK).
#   docker build --build-arg VCS_REF="$(git rev-parse HEAD)" -t aside:"$(git rev-parse --short=12 HEAD)" .

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
WORKDIR /app
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"

# Recipe: only Cargo.toml/Cargo.lock shapes, so the dependency layer below is reused until they change.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin aside \
    && install -D -m 0755 target/release/aside /out/aside

# distroless/cc: glibc + libgcc, no shell, no package manager; nonroot = uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VCS_REF=unknown
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="aside" \
      org.opencontainers.image.description="Cache-aside JSON data API: Postgres behind a Redis cache" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="https://github.com/aside/aside" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/aside /usr/local/bin/aside
USER 65532:65532
ENV BIND_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json \
    RUST_LOG=info
EXPOSE 8080
# No shell needed: the binary asks its own /health (reads BIND_ADDR for the port).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["/usr/local/bin/aside", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/aside"]
CMD ["serve"]
