# Rudder's images, built from this file by scripts/image.sh (which also pushes them):
#   control-plane (the default target): xds-server (control plane, proxy agent) and
#     xdsctl on a distroless base: no shell, no package manager, non-root (65532).
#   init: the same xds-server with iptables, for the injected `rudder-init` container
#     (`xds-server iptables --apply`). Not needed in CNI mode.
# Bases are pinned by digest; `scripts/image.sh pin` prints the current digests to
# update them with.
ARG RUST_IMAGE=rust:1.91-bookworm
ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
ARG INIT_BASE_IMAGE=debian:bookworm-slim@sha256:7b140f374b289a7c2befc338f42ebe6441b7ea838a042bbd5acbfca6ec875818

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p xds-server -p xdsctl --bins

FROM ${INIT_BASE_IMAGE} AS init
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/xds-server /usr/local/bin/
# Runs as root with NET_ADMIN and NET_RAW only (set by the injector), once, before the app.
ENTRYPOINT ["/usr/local/bin/xds-server"]

FROM ${BASE_IMAGE} AS control-plane
# xds-server (control plane, proxy agent), xdsctl, and rudder-cni (the CNI plugin and its
# node installer, run by the chart's DaemonSet).
COPY --from=build /src/target/release/xds-server /src/target/release/xdsctl \
     /src/target/release/rudder-cni /usr/local/bin/
# The control plane runs as 65532 and the agent as 1337 (set by the chart and the injector).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/xds-server"]
