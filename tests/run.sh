#!/usr/bin/env bash
# The test command of the README. On a fresh machine with only a Rust toolchain and Debian's
# packages it first installs what the tests need — the PostgreSQL server package (for the
# PostgreSQL backend's tests), openssl (the 国密 tests compare with it), softhsm2 (a PKCS#11
# token for the key seam's test) and cargo-nextest (the test runner) — then runs the whole Rust
# test suite with a throwaway PostgreSQL server on loopback (tests/with-postgres.sh).
#
#     bash tests/run.sh                  # arguments go to `cargo nextest run`
#
# Installing needs root or sudo for apt-get; what is already there is not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "tests/run.sh: $1 needs root; install the PostgreSQL server package (postgresql) yourself" >&2
    exit 1
  fi
}

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  echo "== installing the PostgreSQL server package (apt-get install postgresql)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if ! command -v openssl >/dev/null; then
  # The 国密 tests compare SM2 and SM3 with OpenSSL's command line.
  echo "== installing openssl (apt-get install openssl)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null; then
  # The key seam's test keeps a gateway key in a PKCS#11 token.
  echo "== installing softhsm2 (apt-get install softhsm2)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest (cargo install --locked cargo-nextest)"
  cargo install --locked cargo-nextest
fi
exec bash tests/with-postgres.sh cargo nextest run "$@"
