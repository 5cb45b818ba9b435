#!/usr/bin/env bash
# The zone on a highly available PostgreSQL under docker compose (docker/compose.ha.yaml over
# docker/compose.yaml), on the real Docker engine: three PostgreSQL nodes under Patroni with
# etcd, synchronous replication, TLS from the gateways to the database. Clients write through
# both zone replicas and through changxing (whose changes the zone pulls into the same
# database); the PostgreSQL primary is killed mid-stream; Patroni promotes the synchronous
# standby. Then: every acknowledged write is present exactly once (retries with the same
# request id applied once), each peer holds exactly the other's log, the audit chain and the
# evidence verify, the killed node rejoins as a standby. Prints the write outage (seconds from
# the kill to the first write that started after it and succeeded). Removes its containers,
# network and volumes on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
P="yrdha$$"
export YRD_ZONE_PORT=26251 YRD_CHANGXING_PORT=26252 YRD_ANJI_PORT=26253 YRD_GUANGDE_PORT=26254 YRD_ZONE_2_PORT=26255
export YRD_ZONE_ADMIN_PORT=26291 YRD_CHANGXING_ADMIN_PORT=26292 YRD_ANJI_ADMIN_PORT=26293 YRD_GUANGDE_ADMIN_PORT=26294 YRD_ZONE_2_ADMIN_PORT=26295
export YRD_HA_DB_IMAGE="yrd-ha-db:ci"
COMPOSE_FILES="docker/compose.yaml docker/compose.ha.yaml"
source tests/docker/lib.sh
# How long each writer goes on after the kill once writes succeed again, and the bound on
# the outage itself.
AFTER_RECOVERY=${YRD_HA_AFTER_RECOVERY:-10}
OUTAGE_LIMIT=${YRD_HA_OUTAGE_LIMIT:-120}
# The writers and health watchers end with the scenario, however it ends.
pids="" watchers=""
stop_background() {
  touch "$work/stop" "$work/stop-watching"
  # shellcheck disable=SC2086
  [ -z "$pids$watchers" ] || kill $pids $watchers 2>/dev/null || true
}
trap 'stop_background; cleanup' EXIT

# cluster: Patroni's view of the cluster as "member role state timeline" lines, asked of the
# first database node that answers and is on the network (one cut off knows only the past).
cluster() {
  local node id
  for node in pg-1 pg-2 pg-3; do
    id=$(container "$node")
    docker inspect -f '{{range $n, $_ := .NetworkSettings.Networks}}{{$n}} {{end}}' "$id" 2>/dev/null |
      grep -qw "${P}_default" || continue
    docker exec "$id" curl -fsS http://localhost:8008/cluster 2>/dev/null |
      python3 -c '
import json, sys
for m in json.load(sys.stdin)["members"]:
    print(m["name"], m["role"], m["state"], m.get("timeline", "-"))' && return 0
  done
  return 1
}
leader() { cluster | awk '$2 == "leader" && $3 == "running" { print $1 }'; }
sync_standby() { cluster | awk '$2 == "sync_standby" && ($3 == "running" || $3 == "streaming") { print $1 }'; }
three_running() { [ "$(cluster | awk '$3 == "running" || $3 == "streaming"' | wc -l)" = 3 ] && [ -n "$(leader)" ] && [ -n "$(sync_standby)" ]; }
# psql_on NODE SQL: a query as the superuser on NODE's own socket, unaligned output.
psql_on() { docker exec "$(container "$1")" psql -h /var/run/postgresql -U postgres -d yrd_zone -Atc "$2"; }

# writer NAME PARTY PORT: creates projects NAME-1, NAME-2, ... through PARTY's gateway at
# PORT until $work/stop exists, retrying each with its request id until it is acknowledged.
# Logs "ok START END REQUEST_ID NAME ATTEMPTS" or "err START END REQUEST_ID MESSAGE".
writer() {
  local label=$1 party=$2 port=$3 log="$work/writer-$1.log" i=0
  while [ ! -e "$work/stop" ]; do
    i=$((i + 1))
    local rid attempts=0 started out
    rid=$(cat /proc/sys/kernel/random/uuid)
    local deadline=$(($(date +%s) + OUTAGE_LIMIT))
    while :; do
      attempts=$((attempts + 1))
      started=$(date +%s.%N)
      if out=$(timeout 30 "$BIN" client --gateway "127.0.0.1:$port" --ca "$work/certs/ca.crt" \
        --cert "$work/certs/$party/client.crt" --key "$work/certs/$party/client.key" \
        $(create_args "$label-$i") --request-id "$rid" 2>&1); then
        echo "ok $started $(date +%s.%N) $rid ${out%%$'\n'*} $attempts" >>"$log"
        break
      fi
      echo "err $started $(date +%s.%N) $rid ${out//$'\n'/ }" >>"$log"
      if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "gave-up $started $(date +%s.%N) $rid" >>"$log"
        return 1
      fi
      sleep 0.2
    done
  done
}
# health_log NAME PORT: the admin /healthz answer of a gateway every 0.2 s, as
# "TIME STATUS" lines when it changes, until $work/stop-watching exists.
health_log() {
  local last="" now
  while [ ! -e "$work/stop-watching" ]; do
    now=$(curl -s -m 2 "http://127.0.0.1:$2/healthz" || true)
    now=${now:-NO_ANSWER}
    if [ "$now" != "$last" ]; then
      echo "$(date +%s.%N) $now" >>"$work/health-$1.log"
      last=$now
    fi
    sleep 0.2
  done
}
# names PARTY PORT OWNER: the sorted names of OWNER's projects as PARTY's gateway lists them.
names() { client "$1" "$2" project list --owner "$3" | grep '^parties/' | sort; }
same_names() { [ "$(names "$1" "$2" "$4")" = "$(names "$3" "$5" "$4")" ]; }

step "images"
build_gateway_image
docker build -q -t "$YRD_HA_DB_IMAGE" docker/ha >/dev/null
echo "database image: $YRD_HA_DB_IMAGE (Debian's postgresql-15, patroni, etcd-server)"

step "up: etcd x3, PostgreSQL x3 under Patroni, zone and zone-2 on it, changxing"
compose up -d zone zone-2 changxing >/dev/null 2>&1 || fail "compose up"
for s in zone zone-2 changxing; do eventually 180 healthy "$s" || fail "$s not healthy"; done
eventually 60 three_running || fail "the database cluster is not one leader and two standbys"
docker cp "$(container zone):/certs" "$work/certs"
cluster
echo "primary: $(leader), synchronous standby: $(sync_standby)"

step "every gateway session to the database is TLS"
sessions=$(psql_on "$(leader)" "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'yrd-gateway'")
[ "${sessions%%|*}" -ge 2 ] && [ "${sessions%%|*}" = "${sessions##*|}" ] || fail "gateway sessions (all|tls): $sessions"
echo "gateway sessions on the primary (all|TLS): $sessions"

acknowledged() { cat "$work"/writer-*.log 2>/dev/null | grep -c '^ok ' || true; }
serving() { [ "$(curl -s -m 2 "http://127.0.0.1:$1/healthz")" = SERVING ]; }

# fault_round ROUND FAULT: writers through zone, zone-2 and changxing; FAULT (kill or cut)
# strikes the primary mid-stream; waits for a new primary and the first acknowledged write to
# the zone, lets the writers go on for $AFTER_RECOVERY s, stops them (each finishes its
# write) and prints what the clients and the gateways saw.
fault_round() {
  local round=$1 fault=$2 old new at recovered_at outage failed going_from
  old=$(leader)
  rm -f "$work/stop" "$work/stop-watching"
  pids="" watchers=""
  going_from=$(acknowledged)
  writer "$round-zone-a" zone "$YRD_ZONE_PORT" & pids="$pids $!"
  writer "$round-zone-b" zone "$YRD_ZONE_PORT" & pids="$pids $!"
  writer "$round-zone2-a" zone "$YRD_ZONE_2_PORT" & pids="$pids $!"
  writer "$round-zone2-b" zone "$YRD_ZONE_2_PORT" & pids="$pids $!"
  writer "$round-cx" changxing "$YRD_CHANGXING_PORT" & pids="$pids $!"
  health_log "$round-zone" "$YRD_ZONE_ADMIN_PORT" & watchers="$watchers $!"
  health_log "$round-zone-2" "$YRD_ZONE_2_ADMIN_PORT" & watchers="$watchers $!"
  going() { [ "$(acknowledged)" -ge $((going_from + 20)) ]; }
  eventually 60 going || fail "the writers did not get going"
  sleep 3
  echo "$(($(acknowledged) - going_from)) writes acknowledged; now the fault: $fault $old"
  case $fault in
    kill) docker kill "$(container "$old")" >/dev/null ;;
    cut) docker network disconnect "${P}_default" "$(container "$old")" ;;
  esac
  at=$(date +%s.%N)
  # The outage ends with the first write to the zone that started after the fault and was
  # acknowledged (changxing's writer goes on meanwhile: its store is its own).
  first_after() { cat "$work"/writer-"$round"-zone*.log | awk -v k="$at" '$1 == "ok" && $2 >= k { print $3 }' | sort -n | head -1; }
  recovered() { [ -n "$(first_after)" ]; }
  if ! eventually 60 recovered; then
    # Seen once (Debian's Patroni 3.0.2, after the network cut): the remaining standby stayed
    # in "running pg_rewind from <new primary> in progress", and the new primary, in strict
    # synchronous mode, held every commit until a standby followed it. What an operator does:
    # restart Patroni on the stuck node. Said here, so the outage it adds is not hidden.
    echo "no write acknowledged 60 s after the fault; the cluster: $(cluster | tr '\n' ';')"
    local stuck
    for stuck in $(cluster | awk -v old="$old" '$1 != old && $2 != "leader" && $3 != "running" && $3 != "streaming" { print $1 }'); do
      echo "restarting $stuck, a standby that does not follow the new primary"
      docker restart "$(container "$stuck")" >/dev/null
    done
    eventually $((OUTAGE_LIMIT - 60)) recovered ||
      fail "no write succeeded within $OUTAGE_LIMIT s of the fault; the cluster: $(cluster | tr '\n' ';')"
  fi
  recovered_at=$(first_after)
  sleep "$AFTER_RECOVERY"
  touch "$work/stop"
  for pid in $pids; do wait "$pid" || fail "a writer gave up: $(grep -h gave-up "$work"/writer-*.log)"; done
  eventually 60 serving "$YRD_ZONE_ADMIN_PORT" || fail "zone's health did not return to SERVING"
  eventually 60 serving "$YRD_ZONE_2_ADMIN_PORT" || fail "zone-2's health did not return to SERVING"
  sleep 0.5
  touch "$work/stop-watching"
  for pid in $watchers; do wait "$pid" || true; done
  pids="" watchers=""
  grep -q NOT_SERVING "$work/health-$round-zone.log" || fail "zone's health never showed the outage"
  grep -q NOT_SERVING "$work/health-$round-zone-2.log" || fail "zone-2's health never showed the outage"
  new=$(leader)
  [ -n "$new" ] && [ "$new" != "$old" ] || fail "no new primary (was $old, now '$new')"
  # Both replicas listen for each other's commits on the new primary.
  listeners() { [ "$(psql_on "$new" "SELECT count(DISTINCT client_addr) FROM pg_stat_activity WHERE application_name = 'yrd-gateway' AND query = 'LISTEN yrd_feed'")" = 2 ]; }
  eventually 30 listeners || fail "the replicas do not both listen on the new primary $new"
  outage=$(awk -v a="$at" -v b="$recovered_at" 'BEGIN { printf "%.1f", b - a }')
  failed=$(cat "$work"/writer-"$round"-*.log | grep -c '^err ' || true)
  echo "write outage: $outage s from the $fault of $old to the first acknowledged write to the zone; $new is primary, both replicas listen on it"
  echo "acknowledged writes this round: $(($(acknowledged) - going_from)); failed attempts, all retried: $failed"
  if [ "$failed" -gt 0 ]; then
    echo "the errors the clients saw (counted):"
    cat "$work"/writer-"$round"-*.log | awk '$1 == "err" { $1 = $2 = $3 = $4 = ""; print }' | sed 's/^ *//' | sort | uniq -c | sort -rn | head -8
  fi
  for f in "$work"/writer-"$round"-zone*.log; do
    awk -v k="$at" -v w="$(basename "$f" .log)" '
      $1 == "err" { last_err = $3 - k; n++ }
      $1 == "ok" && $2 >= k && !first { first = $3 - k }
      END { printf "%s: %d failed attempts, the last ending at %+.1f s; the first write begun after the fault acknowledged at %+.1f s\n", w, n, last_err, first }' "$f"
  done
  echo "what zone logged at WARN and ERROR since the fault (counted; peers not started here left out):"
  docker logs --since "$(date -u -d "@${at%.*}" +%Y-%m-%dT%H:%M:%SZ)" "$(container zone)" 2>&1 |
    grep -E '"level":"(WARN|ERROR)"' | grep -v 'failed to lookup address' |
    python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    print(e["level"], e["message"], "|", (e.get("cause") or e.get("error") or e.get("reason") or "")[:150])' |
    sort | uniq -c | sort -rn | head -12
  local g
  for g in zone zone-2; do
    echo "health of $g (/healthz, s after the fault): $(awk -v k="$at" '{ printf "%s at %+.1f; ", $2, $1 - k }' "$work/health-$round-$g.log")"
  done
}

step "round 1: the primary is killed (docker kill) mid-stream"
killed=$(leader)
fault_round killed kill

step "the killed node rejoins as a standby"
docker start "$(container "$killed")" >/dev/null
eventually 120 three_running || fail "the cluster did not return to one primary and two standbys: $(cluster)"
cluster

step "round 2: the primary is cut off from the network (docker network disconnect) mid-stream"
cut=$(leader)
fault_round cut cut

step "the cut-off node is reconnected and rejoins as a standby"
docker network connect --alias "$cut" "${P}_default" "$(container "$cut")"
if ! eventually 30 three_running; then
  # Seen with Debian's Patroni 3.0.2: after demoting itself for lack of etcd, it stays
  # "stopping" on a request to etcd made over the lost network (the node comes back under a
  # new address). What an operator does: restart Patroni on that node.
  echo "Patroni on $cut did not resume within 30 s of the network's return; restarting its container"
  docker restart "$(container "$cut")" >/dev/null
  eventually 120 three_running || fail "the cluster did not return to one primary and two standbys: $(cluster)"
fi
cluster

step "every acknowledged write is present exactly once"
cat "$work"/writer-*-zone*.log | awk '$1 == "ok" { print $5 }' | sort >"$work/acknowledged-zone"
cat "$work"/writer-*-cx.log | awk '$1 == "ok" { print $5 }' | sort >"$work/acknowledged-changxing"
names zone "$YRD_ZONE_PORT" zone >"$work/stored-zone"
diff "$work/acknowledged-zone" "$work/stored-zone" >/dev/null ||
  fail "the zone's projects differ from the acknowledged writes: $(diff "$work/acknowledged-zone" "$work/stored-zone" | head -5)"
dups=$(client zone "$YRD_ZONE_PORT" project list --owner zone | awk '$1 == "display_name:" { print $2 }' | sort | uniq -d)
[ -z "$dups" ] || fail "created twice: $dups"
retried=$(cat "$work"/writer-*.log | awk '$1 == "ok" && $6 > 1' | wc -l)
echo "$(wc -l <"$work/stored-zone") zone projects = the acknowledged ones, no display name twice; $retried were acknowledged after retries"

step "each peer holds exactly the other's log"
eventually 60 same_names zone "$YRD_ZONE_PORT" changxing "$YRD_CHANGXING_PORT" zone || fail "changxing's copy of the zone's projects differs"
eventually 60 same_names changxing "$YRD_CHANGXING_PORT" zone "$YRD_ZONE_2_PORT" changxing || fail "the zone's copy of changxing's projects differs"
diff "$work/acknowledged-changxing" <(names changxing "$YRD_CHANGXING_PORT" changxing) >/dev/null || fail "changxing's projects differ from its acknowledged writes"
echo "changxing holds the zone's $(wc -l <"$work/stored-zone") projects; the zone holds changxing's $(wc -l <"$work/acknowledged-changxing")"

step "the audit chain and the evidence verify (zone on its third primary, changxing)"
for party in zone changxing; do
  docker exec "$(container "$party")" yrd-gateway audit verify --config /etc/yrd/gateway.toml || fail "$party's audit chain does not verify"
  docker exec "$(container "$party")" yrd-gateway audit verify-evidence --config /etc/yrd/gateway.toml || fail "$party's evidence does not verify"
done

step "compose HA scenario passed"
echo "1 passed, 0 failed"
