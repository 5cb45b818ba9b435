#!/usr/bin/env bash
# The zone as two gateway replicas on PostgreSQL under docker compose
# (docker/compose.postgres.yaml over docker/compose.yaml), on the real Docker engine: writes
# through either replica are read through the other and reach changxing; one replica pulls
# from changxing, and when it is killed the other takes over and nothing is lost. Uses the
# official postgres:15 image when present, else builds tests/docker/postgres (Debian's
# PostgreSQL 15). Removes its containers, network and volumes on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
P="yrdpg$$"
export YRD_ZONE_PORT=26151 YRD_CHANGXING_PORT=26152 YRD_ANJI_PORT=26153 YRD_GUANGDE_PORT=26154 YRD_ZONE_2_PORT=26155
export YRD_ZONE_ADMIN_PORT=26191 YRD_CHANGXING_ADMIN_PORT=26192 YRD_ANJI_ADMIN_PORT=26193 YRD_GUANGDE_ADMIN_PORT=26194 YRD_ZONE_2_ADMIN_PORT=26195
COMPOSE_FILES="docker/compose.yaml docker/compose.postgres.yaml"
source tests/docker/lib.sh

# gauge PORT NAME PEER: a per-peer gauge from the admin server on PORT (empty if absent).
gauge() {
  local port=$1 name=$2 peer=$3
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  awk -v key="$name{peer=\"$peer\"}" '$1 == key { print $2 }' <&3
  exec 3<&-
}
# pulls ADMIN_PORT: this replica holds changxing's pull lease and its stream is open.
pulls() { [ "$(gauge "$1" yrd_peer_standby changxing)" = 0 ] && [ "$(gauge "$1" yrd_peer_connected changxing)" = 1 ]; }
stands_by() { [ "$(gauge "$1" yrd_peer_standby changxing)" = 1 ]; }

step "images"
build_gateway_image
if [ -z "${YRD_POSTGRES_IMAGE:-}" ]; then
  if docker image inspect postgres:15 >/dev/null 2>&1; then
    export YRD_POSTGRES_IMAGE=postgres:15
  else
    docker build -q -t yrd-ci-postgres:15 tests/docker/postgres >/dev/null
    export YRD_POSTGRES_IMAGE=yrd-ci-postgres:15
  fi
fi
echo "postgres image: $YRD_POSTGRES_IMAGE"

step "up: postgres, zone and zone-2 on it, changxing"
compose up -d zone zone-2 changxing >/dev/null 2>&1 || fail "compose up"
for s in zone zone-2 changxing; do eventually 120 healthy "$s" || fail "$s not healthy"; done
docker cp "$(container zone):/certs" "$work/certs"
echo "both zone replicas healthy on PostgreSQL"

step "writes through either replica, read through the other, received by changxing"
A=$(first_line client zone "$YRD_ZONE_PORT" $(create_args via-zone))
B=$(first_line client zone "$YRD_ZONE_2_PORT" $(create_args via-zone-2))
[[ "$A" == parties/zone/* && "$B" == parties/zone/* ]] || fail "creates: $A / $B"
client zone "$YRD_ZONE_2_PORT" project get "$A" >/dev/null || fail "zone-2 cannot read $A"
client zone "$YRD_ZONE_PORT" project get "$B" >/dev/null || fail "zone cannot read $B"
eventually 60 client changxing "$YRD_CHANGXING_PORT" project get "$A" || fail "$A never reached changxing"
eventually 60 client changxing "$YRD_CHANGXING_PORT" project get "$B" || fail "$B never reached changxing"
echo "$A and $B at both replicas and at changxing"

step "the replica pulling from changxing is killed; the other takes over"
C1=$(first_line client changxing "$YRD_CHANGXING_PORT" $(create_args before-the-kill))
one_pulls() { pulls "$YRD_ZONE_ADMIN_PORT" && stands_by "$YRD_ZONE_2_ADMIN_PORT" || { pulls "$YRD_ZONE_2_ADMIN_PORT" && stands_by "$YRD_ZONE_ADMIN_PORT"; }; }
eventually 60 one_pulls || fail "not exactly one replica pulling from changxing"
if pulls "$YRD_ZONE_ADMIN_PORT"; then
  holder=zone survivor_port=$YRD_ZONE_2_PORT survivor_admin=$YRD_ZONE_2_ADMIN_PORT
else
  holder=zone-2 survivor_port=$YRD_ZONE_PORT survivor_admin=$YRD_ZONE_ADMIN_PORT
fi
eventually 60 client zone "$survivor_port" project get "$C1" || fail "$C1 never reached the zone"
docker kill "$(container "$holder")" >/dev/null
killed_at=$(date +%s)
C2=$(first_line client changxing "$YRD_CHANGXING_PORT" $(create_args after-the-kill))
eventually 60 pulls "$survivor_admin" || fail "the surviving replica did not take over"
echo "took over within $(($(date +%s) - killed_at)) s after docker kill of $holder"
eventually 60 client zone "$survivor_port" project get "$C2" || fail "$C2 never reached the zone"
docker start "$(container "$holder")" >/dev/null
eventually 120 healthy "$holder" || fail "$holder not healthy after restart"
holder_admin=$YRD_ZONE_ADMIN_PORT
[ "$holder" = zone-2 ] && holder_admin=$YRD_ZONE_2_ADMIN_PORT
eventually 30 stands_by "$holder_admin" || fail "the restarted $holder does not stand by"
echo "$C2 applied through the survivor; the restarted $holder stands by"

step "at rest: the phone in neither PostgreSQL's data directory nor a pg_dump"
pg="$(container postgres)"
dump_hits=$(docker exec "$pg" sh -c "pg_dump -U yrd yrd_zone | grep -a -c -- 8613800000000 || true")
[ "$dump_hits" = 0 ] || fail "pg_dump holds the phone in clear ($dump_hits lines)"
sealed=$(docker exec "$pg" sh -c "pg_dump -U yrd yrd_zone | grep -a -c -- yrd-sealed: || true")
[ "$sealed" -gt 0 ] || fail "pg_dump shows no sealed bodies"
docker exec "$pg" psql -U yrd -d yrd_zone -qc CHECKPOINT >/dev/null
files=$(docker exec "$pg" sh -c "grep -r -a -l -- 8613800000000 /var/lib/postgresql/data || true")
[ -z "$files" ] || fail "PGDATA files hold the phone in clear: $files"
echo "pg_dump: $sealed lines with sealed bodies, none with the phone; PGDATA: no file with it"

step "compose postgres scenario passed"
echo "1 passed, 0 failed"
