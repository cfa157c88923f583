# syntax=docker/dockerfile:1
# The operator image: `weir` built in Rust's official image, copied into distroless's
# `cc` image (glibc and libgcc, nothing else: no shell, no package manager) and run as its
# non-root user 65532. Build it from the repository root:
#
#   docker build -t <registry>/weir:<version> .
#
# The chart's default command is `weir operator ...` (ENTRYPOINT + its own args); the
# image needs no writable filesystem, so it runs with readOnlyRootFilesystem.

FROM docker.io/library/rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate downloads and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin weir \
 && install -D -m 0755 target/release/weir /out/weir

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="Kubernetes-native pipeline operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/weir /usr/local/bin/weir
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["operator"]
