#!/usr/bin/env bash
# Runs a command (the test suite) with a throwaway PostgreSQL server on loopback, named to the
# tests by YRD_TEST_POSTGRES_URL, and stops and deletes the server afterwards:
#
#     bash tests/with-postgres.sh cargo nextest run
#
# If YRD_TEST_POSTGRES_URL is already set, the command runs against that server instead (each
# test creates a database of its own there, so the role needs CREATEDB); the TLS test then needs
# YRD_TEST_POSTGRES_CA, the CA of that server's certificate for `localhost`.
# Needs the PostgreSQL server binaries (Debian: apt-get install postgresql).
set -euo pipefail

if [ -n "${YRD_TEST_POSTGRES_URL:-}" ]; then
  exec "$@"
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  bindir=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
fi
if [ ! -x "$bindir/initdb" ]; then
  echo "with-postgres: no PostgreSQL server binaries (initdb) found; install them, e.g." >&2
  echo "  apt-get install postgresql" >&2
  exit 1
fi

data=$(mktemp -d /tmp/yrd-test-postgres.XXXXXX)
# PostgreSQL refuses to run as root; the Debian package's postgres user runs it then.
as_server() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}
[ "$(id -u)" = 0 ] && chown postgres: "$data"

stop() {
  as_server "$bindir/pg_ctl" -D "$data/db" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap stop EXIT

as_server "$bindir/initdb" -D "$data/db" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$data/initdb.log" 2>&1 \
  || { cat "$data/initdb.log" >&2; exit 1; }
# TLS on (plain connections still allowed): a CA and a server certificate for `localhost`,
# made with openssl (which the postgresql package brings), named to the tests by
# YRD_TEST_POSTGRES_CA, so the TLS test can verify the server as a gateway would.
if ! command -v openssl >/dev/null; then
  echo "with-postgres: openssl is needed for the test server's TLS certificate (apt-get install openssl)" >&2
  exit 1
fi
tls=$data/tls
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=yrd-test-database-ca -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
  -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$tls/ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 2 -extfile "$tls/ext" -out "$tls/server.crt" 2>/dev/null
chmod 600 "$tls/server.key"
[ "$(id -u)" = 0 ] && chown -R postgres: "$tls"
# Loopback only, no Unix socket in a shared place; fsync stays on (durability is under test).
# A random port; another one if it is taken.
started=
for _ in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 40000))
  if as_server "$bindir/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=400 -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key" start >/dev/null; then
    started=1
    break
  fi
done
if [ -z "$started" ]; then
  cat "$data/server.log" >&2
  exit 1
fi
echo "with-postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
# The data directory, for the test that looks at what the server's files hold.
export YRD_TEST_PGDATA="$data/db"

export YRD_TEST_POSTGRES_URL="host=127.0.0.1 port=$port user=postgres dbname=postgres"
export YRD_TEST_POSTGRES_CA="$tls/ca.crt"
# pg_dump and pg_restore of the same version (the backup test uses them).
export YRD_TEST_POSTGRES_BIN="$bindir"
status=0
"$@" || status=$?
exit $status
