#!/usr/bin/env bash
# Shared by the docker compose scenarios (sourced): the compose command for project $P over the
# files in $COMPOSE_FILES, the demo client against published ports and inside containers,
# waiting, failing with the logs, and cleanup on exit. Uses the yrd-gateway binary at $YRD_BIN
# (default: the debug build the tests just made).

START=$(date +%s)
BIN="${YRD_BIN:-target/debug/yrd-gateway}"
export YRD_IMAGE="yrd-gateway:ci"
COMPOSE="docker-compose"
docker compose version >/dev/null 2>&1 && COMPOSE="docker compose"
work=$(mktemp -d)

compose() {
  local files=()
  for f in $COMPOSE_FILES; do files+=(-f "$f"); done
  timeout 180 $COMPOSE -p "$P" "${files[@]}" "$@"
}
# first_line COMMAND...: the first line of COMMAND's output. (Not `| head -1`: a writer that
# gets SIGPIPE after head exits, as the docker CLI does, fails the pipeline under pipefail.)
first_line() {
  local out
  out=$("$@") || return 1
  printf '%s\n' "${out%%$'\n'*}"
}
container() { first_line docker ps -aq --filter "label=com.docker.compose.project=$P" --filter "label=com.docker.compose.service=$1"; }
step() { echo "== $(($(date +%s) - START)) s: $*"; }
cleanup() {
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  compose ps || true
  compose logs --tail 20 || true
  exit 1
}

# client PARTY PORT ARGS...: the demo client of PARTY against a published port.
client() {
  local party=$1 port=$2
  shift 2
  "$BIN" client --gateway "127.0.0.1:$port" --ca "$work/certs/ca.crt" \
    --cert "$work/certs/$party/client.crt" --key "$work/certs/$party/client.key" "$@"
}
# inside SERVICE ARGS...: the demo client inside a gateway's container (works while partitioned).
inside() {
  local service=$1
  shift
  docker exec "$(container "$service")" yrd-gateway client --gateway 127.0.0.1:50051 --ca /certs/ca.crt \
    --cert "/certs/$service/client.crt" --key "/certs/$service/client.key" "$@"
}
create_args() { echo "project create --display-name $1 --investor-name Investor --credit-code 91330522MA2B3C4D57 --industry other --contact-name Zhang --contact-phone +8613800000000"; }
# in_store_files PARTY TEXT: how many lines of PARTY's SQLite store files (database, WAL)
# hold TEXT, read inside its container.
in_store_files() {
  docker exec "$(container "$1")" sh -c "cat /var/lib/yrd/store.db* | grep -a -c -- '$2' || true"
}
# eventually SECONDS COMMAND...: retries COMMAND until it succeeds.
eventually() {
  local limit=$1
  shift
  local deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$(container "$1")" 2>/dev/null)" = healthy ]; }
all_healthy() { for s in zone changxing anji guangde; do eventually 120 healthy "$s" || fail "$s not healthy"; done; }

# The base image (debootstrap, when absent) and the gateway image from $BIN.
build_gateway_image() {
  bash tests/docker/base-image.sh
  [ -x "$BIN" ] || cargo build --bin yrd-gateway
  local ctx
  ctx=$(mktemp -d)
  cp "$BIN" "$ctx/yrd-gateway"
  chmod 755 "$ctx/yrd-gateway"
  docker build -q -f docker/Dockerfile --target prebuilt -t "$YRD_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
}
