# syntax=docker/dockerfile:1
# The operator image: `weir` built in Rust's official image as a static executable (musl),
# copied into distroless's `static` image (no libc, no shell, no package manager) and run as
# its non-root user 65532. Build it from the repository root:
#
#   docker build -t <registry>/weir:<version> .
#
# The chart's default command is `weir operator ...` (ENTRYPOINT + its own args); the
# image needs no writable filesystem, so it runs with readOnlyRootFilesystem.
#
# The executable is static because the same file runs inside task pods whose images are the
# users': for a task with artifacts, an init container of this image runs
# `weir exec-install /weir-exec/weir`, and the task's container runs `/weir-exec/weir exec --
# <command>` on whatever libc (or none) its image has (docs/artifacts.md).

FROM docker.io/library/rust:1.89-bookworm AS build
# musl-gcc for ring's C and assembly parts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# Cache mounts keep the crate downloads and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target "$target" --bin weir \
 && install -D -m 0755 "target/$target/release/weir" /out/weir

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="Kubernetes-native pipeline operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/weir /usr/local/bin/weir
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["operator"]
