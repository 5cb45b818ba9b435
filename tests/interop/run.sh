#!/usr/bin/env bash
# The interoperability suite: `buf lint` and `buf breaking` on proto/, then the Python grpcio
# tests against a four-party `yrd-gateway dev` federation they start on free loopback ports.
#
#   bash tests/interop/run.sh            # from anywhere in the checkout
#
# Needs python3 with venv and git; installs its Python packages (tests/interop/requirements.txt)
# into $YRD_INTEROP_VENV (default target/interop-venv). `buf breaking` compares proto/ with the
# commit $YRD_BUF_AGAINST (default HEAD~1, the previous commit).
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=${YRD_INTEROP_VENV:-target/interop-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt

echo "-- buf lint"
"$venv/bin/buf" lint
echo "buf lint: clean"

against=${YRD_BUF_AGAINST:-HEAD~1}
echo "-- buf breaking against $against"
if git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
  # subdir=proto: the older commit may predate buf.yaml; its protos are rooted at proto/ too.
  "$venv/bin/buf" breaking --against ".git#ref=$against,subdir=proto"
  echo "buf breaking: no breaking change against $against"
else
  echo "buf breaking: $against is not in this clone (shallow or first commit); not compared"
fi

echo "-- python grpcio suite"
cargo build --quiet --bin yrd-gateway
YRD_GATEWAY_BIN=target/debug/yrd-gateway "$venv/bin/python" -m pytest -p no:cacheprovider -q tests/interop

echo "-- 国密 TLS against OpenSSL 4.0 (gm_peer.py): its client calls a gm gateway, the gateway's client calls its server"
YRD_GM_PYTHON="$venv/bin/python" cargo nextest run --run-ignored only python_openssl
