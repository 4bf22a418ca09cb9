# syntax=docker/dockerfile:1
#
# The sluice container image: the binary (the built-in plugins are embedded
# in it) plus the built-in plugins as .wasm files, for configs that name them
# by `file`. Build from the repository root:
#
#   docker build -t sluice:0.1.0 .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:9901:9901 sluice:0.1.0
#
# Your config and plugins are mounted over /etc/sluice (read-only is fine;
# files changed there are reloaded); /var/lib/sluice holds state such as ACME
# certificates. See docs/DEPLOYING.md. This file is linted in CI (hadolint)
# and its paths are checked by tests/packaging.rs; no image is built there.

# The toolchain pinned in rust-toolchain.toml (tests/packaging.rs checks they agree).
ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG RUST_VERSION
WORKDIR /src
# What rust-toolchain.toml asks for: the wasm32-wasip2 target builds the
# in-tree plugins, which host/build.rs compiles and embeds.
RUN rustup toolchain install "${RUST_VERSION}" --profile minimal \
        --target wasm32-wasip2 --component rustfmt --component clippy
COPY . .
# The cache mounts keep the registry and target/ between builds; the
# results are copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice \
    && mkdir -p /out/plugins /out/state \
    && cp target/release/sluice /out/sluice \
    && cp target/wasm-plugins/wasm32-wasip2/release/sniff.wasm \
          target/wasm-plugins/wasm32-wasip2/release/path.wasm /out/plugins/

# glibc and libgcc (what the binary links), CA certificates, no shell; the
# same Debian release as the build stage. "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
COPY --from=build /out/plugins/ /usr/share/sluice/plugins/
# A default config (the demo, reachable from outside the container); mount
# your own over /etc/sluice.
COPY deploy/docker/sluice.toml /etc/sluice/sluice.toml
# The state directory, writable by the sluice user (a named volume mounted
# here starts as a copy of it, ownership included).
COPY --from=build --chown=65532:65532 /out/state /var/lib/sluice
USER 65532:65532
WORKDIR /var/lib/sluice
# 8080: the public listener of the default config; 9901: the admin listener
# (/healthz, /metrics, /status; no authentication: do not publish it).
EXPOSE 8080 9901
# SIGTERM drains: stop accepting, let open connections finish for --grace.
# Give `docker stop` longer than that: `docker stop -t 45` or `--stop-timeout 45`.
STOPSIGNAL SIGTERM
# No HEALTHCHECK: the image has no shell or HTTP client. Orchestrators probe
# the admin listener's GET /healthz (see deploy/kubernetes/deployment.yaml).
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "--config", "/etc/sluice/sluice.toml", "--grace", "30s"]
