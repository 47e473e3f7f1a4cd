#!/usr/bin/env bash
# Builds and pushes Rudder's images (see Dockerfile):
#   scripts/image.sh build REGISTRY [TAG]   build REGISTRY/rudder:TAG and REGISTRY/rudder-init:TAG
#   scripts/image.sh push REGISTRY [TAG]    build, then push both
#   scripts/image.sh pin                    print the current digests of the pinned bases
# TAG defaults to the workspace version. Install the chart with the same registry:
#   helm install rudder charts/rudder -n rudder-system \
#     --set image.repository=REGISTRY/rudder --set image.initRepository=REGISTRY/rudder-init
# For a private registry, also --set imagePullSecrets[0].name=SECRET (the control plane)
# and give injected pods' ServiceAccounts the same pull secret.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cmd="${1:-}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
build() {
    local registry="$1" tag="$2"
    docker build --target control-plane -t "$registry/rudder:$tag" .
    docker build --target init -t "$registry/rudder-init:$tag" .
}
case "$cmd" in
build)
    build "${2:?registry}" "${3:-$version}"
    ;;
push)
    registry="${2:?registry}"
    tag="${3:-$version}"
    build "$registry" "$tag"
    docker push "$registry/rudder:$tag"
    docker push "$registry/rudder-init:$tag"
    ;;
pin)
    for image in gcr.io/distroless/cc-debian12:nonroot debian:bookworm-slim; do
        digest="$(docker buildx imagetools inspect "$image" --format '{{json .Manifest.Digest}}' | tr -d '"')"
        echo "$image@$digest"
    done
    ;;
*)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
