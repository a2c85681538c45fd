# aside image: cargo-chef dependency layer, dist build (Cargo.toml profile.dist: fat LTO), distroless runtime (no shell, non-root, read-only rootfs OK).
#   docker build --build-arg VCS_REF="$(git rev-parse HEAD)" --build-arg CREATED="$(git log -1 --format=%cI)" \
#     -t aside:"$(git rev-parse --short=12 HEAD)" .
# Air-gapped (no registry; scripts/images.sh does this with BuildKit, which skips the unused Rust stages):
#   cp target/dist/aside prebuilt/aside   (cargo build --profile dist)
#   DOCKER_BUILDKIT=1 docker build --build-arg BIN_STAGE=prebuilt --build-arg RUNTIME_BASE=<a local glibc base> .
# No `# syntax=` line: it makes BuildKit pull its frontend image; the built-in frontend reads this file.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78
# Where the binary comes from: `builder` (compiled below) or `prebuilt` (prebuilt/aside in the context).
ARG BIN_STAGE=builder
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

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
RUN cargo chef cook --profile dist --locked --recipe-path recipe.json
COPY . .
RUN cargo build --profile dist --locked --bin aside \
    && install -D -m 0755 target/dist/aside /out/aside

# A dist binary built on the host (glibc, libgcc), for a build machine that cannot pull the Rust image.
FROM scratch AS prebuilt
COPY prebuilt/aside /out/aside

FROM ${BIN_STAGE} AS bin

# distroless/cc: glibc + libgcc, no shell, no package manager; nonroot = uid/gid 65532.
FROM ${RUNTIME_BASE} AS runtime
ARG VCS_REF=unknown
ARG VERSION=0.1.0
# The commit's time, not the build's (`git log -1 --format=%cI`): the same commit gives the same image.
ARG CREATED=unknown
LABEL org.opencontainers.image.title="aside" \
      org.opencontainers.image.description="Cache-aside JSON data API: Postgres behind a Redis cache" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/aside/aside" \
      org.opencontainers.image.licenses="MIT"
COPY --from=bin /out/aside /usr/local/bin/aside
USER 65532:65532
ENV BIND_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json \
    RUST_LOG=info
EXPOSE 8080
# No shell needed: the binary asks its own /health (reads BIND_ADDR for the port).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["/usr/local/bin/aside", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/aside"]
CMD ["serve"]
