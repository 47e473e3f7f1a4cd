# The control-plane image: xds-server (control plane, proxy agent, iptables init),
# xdsctl and rudder-cni (the CNI plugin and its node installer). The chart's default
# image, ghcr.io/rudder-mesh/rudder:<appVersion>, is this file built at the release tag:
#   docker build -t ghcr.io/rudder-mesh/rudder:0.1.0 .
FROM rust:1.91-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p xds-server -p xdsctl --bins

FROM debian:bookworm-slim
# iptables for the injected init container (it runs `xds-server iptables --apply`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/xds-server /src/target/release/xdsctl \
     /src/target/release/rudder-cni /usr/local/bin/
# The control plane runs as 65532 and the agent as 1337 (set by the chart and the
# injector); the init container alone runs as root, with NET_ADMIN only.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/xds-server"]
