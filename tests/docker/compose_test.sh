#!/usr/bin/env bash
# The docker compose deployment on the real Docker engine: four parties from nothing, a write
# read at another party without the contact phone (over gRPC and over HTTP/JSON with curl), a network partition, a node loss during
# writes, `down` then `up` with the data kept, and a fifth party (lingang) joining the running
# federation without a restart. Bounded in time; removes its containers, network and volumes
# on exit, and puts back the config files it appended to. Uses the yrd-gateway binary at $YRD_BIN (default: the debug
# build the tests just made), packaged with docker/Dockerfile's `prebuilt` target.
set -euo pipefail
cd "$(dirname "$0")/../.."
P="yrdci$$"
export YRD_ZONE_PORT=26051 YRD_CHANGXING_PORT=26052 YRD_ANJI_PORT=26053 YRD_GUANGDE_PORT=26054
export YRD_ZONE_ADMIN_PORT=26091 YRD_CHANGXING_ADMIN_PORT=26092 YRD_ANJI_ADMIN_PORT=26093 YRD_GUANGDE_ADMIN_PORT=26094
export YRD_LINGANG_PORT=26055 YRD_LINGANG_ADMIN_PORT=26095
COMPOSE_FILES="docker/compose.yaml"
source tests/docker/lib.sh
FOUR="zone changxing anji guangde"
put_back_configs() {
  for p in $FOUR; do
    if [ -f "$work/$p.toml.orig" ]; then cp "$work/$p.toml.orig" "docker/config/$p.toml"; fi
  done
  cleanup
}
trap put_back_configs EXIT

step "base image and gateway image"
build_gateway_image

step "compose up from nothing"
compose up -d >/dev/null 2>&1 || fail "compose up"
all_healthy
[ "$(docker inspect -f '{{.State.ExitCode}}' "$(container certs)")" = 0 ] || fail "certificate initialiser failed"
docker cp "$(container zone):/certs" "$work/certs"
[ -f "$work/certs/ca.crt" ] && [ -f "$work/certs/guangde/gateway.key" ] || fail "certificates not created"
echo "certificates created, four gateways healthy"

step "write at changxing, read at guangde without the contact phone"
N=$(first_line client changxing "$YRD_CHANGXING_PORT" $(create_args via-changxing))
[[ "$N" == parties/changxing/projects/* ]] || fail "create at changxing: $N"
eventually 60 client guangde "$YRD_GUANGDE_PORT" project get "$N" || fail "$N never reached guangde"
copy=$(client guangde "$YRD_GUANGDE_PORT" project get "$N")
grep -q '^  contact: Zhang $' <<<"$copy" || fail "guangde's copy carries the phone: $copy"
eventually 60 client anji "$YRD_ANJI_PORT" project get "$N" || fail "$N never reached anji"
copy=$(client anji "$YRD_ANJI_PORT" project get "$N")
grep -q '+8613800000000' <<<"$copy" || fail "anji (same province) lacks the phone: $copy"
echo "$N at guangde without phone, at anji with it"

step "at rest: no store file holds the phone in clear, at the owner or where it is held"
for party in changxing anji guangde; do
  n=$(in_store_files "$party" 8613800000000)
  [ "$n" = 0 ] || fail "$party's store files hold the phone in clear ($n lines)"
done
docker exec "$(container changxing)" yrd-gateway keys status --config /etc/yrd/gateway.toml ||
  fail "keys status at changxing"

step "HTTP/JSON: guangde's system reads $N with curl through the published port"
json=$(curl -sS --fail-with-body --resolve "guangde:$YRD_GUANGDE_PORT:127.0.0.1" --cacert "$work/certs/ca.crt" \
  --cert "$work/certs/guangde/client.crt" --key "$work/certs/guangde/client.key" \
  "https://guangde:$YRD_GUANGDE_PORT/v1/$N") || fail "GET /v1/$N over HTTP/JSON: $json"
grep -q "\"name\":\"$N\"" <<<"$json" || fail "HTTP/JSON answer is not $N: $json"
grep -q '"contact":{"name":"Zhang"}' <<<"$json" || fail "the phone is not withheld over HTTP/JSON: $json"
echo "$json"

step "partition: guangde off the network, writes on both sides"
network="$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(container guangde)")"
docker network disconnect "$network" "$(container guangde)"
Z=$(first_line client zone "$YRD_ZONE_PORT" $(create_args zone-during-partition))
G=$(first_line inside guangde $(create_args guangde-during-partition))
[[ "$Z" == parties/zone/* && "$G" == parties/guangde/* ]] || fail "writes during the partition: $Z / $G"
sleep 3
inside guangde project get "$Z" >/dev/null 2>&1 && fail "the partition did not separate guangde"
docker network connect --alias guangde "$network" "$(container guangde)"
eventually 60 inside guangde project get "$Z" || fail "guangde did not catch up after the partition"
eventually 60 client zone "$YRD_ZONE_PORT" project get "$G" || fail "the zone did not receive guangde's write"
echo "both sides converged: $Z at guangde, $G at the zone"

step "node loss: anji killed during writes"
acked="$work/acked"
: >"$acked"
(
  for i in $(seq 1 40); do
    if name=$(first_line client anji "$YRD_ANJI_PORT" $(create_args anji-$i) 2>/dev/null) && [ -n "$name" ]; then
      echo "$name" >>"$acked"
    fi
  done
) &
writer=$!
acked_at_least() { [ "$(wc -l <"$acked")" -ge "$1" ]; }
eventually 60 acked_at_least 10 || fail "writes at anji did not flow"
docker kill "$(container anji)" >/dev/null
wait "$writer" || true
D=$(first_line client zone "$YRD_ZONE_PORT" $(create_args zone-while-anji-down))
docker start "$(container anji)" >/dev/null 2>&1 || true
eventually 120 healthy anji || fail "anji not healthy after restart"
while read -r name; do
  client anji "$YRD_ANJI_PORT" project get "$name" >/dev/null || fail "anji lost acknowledged $name"
done <"$acked"
eventually 60 client anji "$YRD_ANJI_PORT" project get "$D" || fail "anji did not catch up with the zone"
echo "anji kept all $(wc -l <"$acked") acknowledged writes and caught up"

step "down, then up: the data is still there"
compose down >/dev/null 2>&1 || fail "compose down"
compose up -d >/dev/null 2>&1 || fail "compose up again"
all_healthy
client changxing "$YRD_CHANGXING_PORT" project get "$N" >/dev/null || fail "$N gone after down/up"
client zone "$YRD_ZONE_PORT" project get "$G" >/dev/null || fail "$G gone at the zone after down/up"
client anji "$YRD_ANJI_PORT" project get "$(first_line cat "$acked")" >/dev/null || fail "anji's data gone after down/up"
echo "all records still there"

step "a fifth party, lingang, joins the running federation; the four are not restarted"
COMPOSE_FILES="docker/compose.yaml docker/compose.lingang.yaml"
started() { for p in $FOUR; do docker inspect -f '{{.State.StartedAt}}' "$(container "$p")"; done; }
before=$(started)
compose run --rm certs certs init --dir /certs --parties lingang >/dev/null 2>&1 || fail "certificates for lingang"
for p in $FOUR; do
  cp "docker/config/$p.toml" "$work/$p.toml.orig"
  cat docker/config/lingang-entries.toml >>"docker/config/$p.toml"
done
compose up -d lingang >/dev/null 2>&1 || fail "compose up -d lingang"
eventually 120 healthy lingang || fail "lingang not healthy"
docker cp "$(container zone):/certs/lingang" "$work/certs/lingang"
eventually 60 client lingang "$YRD_LINGANG_PORT" project get "$N" || fail "lingang did not pull $N from history"
L=$(first_line client lingang "$YRD_LINGANG_PORT" $(create_args at-lingang))
[[ "$L" == parties/lingang/projects/* ]] || fail "create at lingang: $L"
eventually 60 client zone "$YRD_ZONE_PORT" project get "$L" || fail "$L never reached the zone"
eventually 60 client guangde "$YRD_GUANGDE_PORT" project get "$L" || fail "$L never reached guangde"
[ "$(started)" = "$before" ] || fail "a gateway of the four was restarted: $before / $(started)"
# (The log read whole first: `docker logs | grep -q` fails under pipefail when grep stops early.)
zone_log=$(docker logs "$(container zone)" 2>&1)
grep -q 'party lingang added' <<<"$zone_log" || fail "the zone did not log the change"
echo "lingang pulled $N, its $L reached the zone and guangde; the four kept running"

step "inside each container: the audit chain and the evidence of every change received verify"
for party in zone changxing anji guangde lingang; do
  echo "-- at $party"
  docker exec "$(container "$party")" yrd-gateway audit verify --config /etc/yrd/gateway.toml ||
    fail "$party's audit chain does not verify"
  docker exec "$(container "$party")" yrd-gateway audit verify-evidence --config /etc/yrd/gateway.toml ||
    fail "$party's evidence does not verify"
done

step "compose scenario passed"
echo "1 passed, 0 failed"
