#!/usr/bin/env bash
# The docker compose deployment in the 国密 profile (docker/compose.gm.yaml over
# docker/compose.yaml) on the real Docker engine: four parties from nothing with SM2
# certificates, a write at changxing read at anji with the contact phone and at guangde
# without it, an OpenSSL 4.0 client (tests/interop/gm_peer.py, in the interop suite's Python)
# calling guangde's HTTP/JSON WhoAmI over RFC 8998, the profile agreed by every peer, and the
# audit chain and the SM2-signed evidence verified inside each container. Removes its
# containers, network and volumes on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
P="yrdgm$$"
export YRD_ZONE_PORT=26251 YRD_CHANGXING_PORT=26252 YRD_ANJI_PORT=26253 YRD_GUANGDE_PORT=26254
export YRD_ZONE_ADMIN_PORT=26291 YRD_CHANGXING_ADMIN_PORT=26292 YRD_ANJI_ADMIN_PORT=26293 YRD_GUANGDE_ADMIN_PORT=26294
COMPOSE_FILES="docker/compose.yaml docker/compose.gm.yaml"
source tests/docker/lib.sh
PYTHON="${YRD_INTEROP_VENV:-target/interop-venv}/bin/python"

step "base image and gateway image"
build_gateway_image

step "compose up from nothing in the gm profile"
compose up -d >/dev/null 2>&1 || fail "compose up"
all_healthy
docker cp "$(container zone):/certs" "$work/certs"
openssl x509 -in "$work/certs/guangde/gateway.crt" -noout -text | grep -q 'ASN1 OID: SM2' ||
  fail "the certificate initialiser did not issue SM2 certificates"
openssl verify -vfyopt distid:1234567812345678 -CAfile "$work/certs/ca.crt" "$work/certs/guangde/gateway.crt" ||
  fail "OpenSSL does not verify guangde's SM2 certificate"
echo "SM2 certificates created, four gateways healthy"

step "whoami: the profile and the channel"
me=$(client changxing "$YRD_CHANGXING_PORT" whoami)
grep -q 'profile:    gm' <<<"$me" || fail "changxing is not in the gm profile: $me"
grep -q 'channel:    TLS_SM4_GCM_SM3 over curveSM2' <<<"$me" || fail "not an RFC 8998 channel: $me"
echo "$me"

step "write at changxing; anji reads the phone, guangde does not"
N=$(first_line client changxing "$YRD_CHANGXING_PORT" $(create_args gm-via-changxing))
[[ "$N" == parties/changxing/projects/* ]] || fail "create at changxing: $N"
eventually 60 client guangde "$YRD_GUANGDE_PORT" project get "$N" || fail "$N never reached guangde"
copy=$(client guangde "$YRD_GUANGDE_PORT" project get "$N")
grep -q '^  contact: Zhang $' <<<"$copy" || fail "guangde's copy carries the phone: $copy"
eventually 60 client anji "$YRD_ANJI_PORT" project get "$N" || fail "$N never reached anji"
copy=$(client anji "$YRD_ANJI_PORT" project get "$N")
grep -q '+8613800000000' <<<"$copy" || fail "anji (same province) lacks the phone: $copy"
echo "$N at guangde without phone, at anji with it"

step "OpenSSL 4.0 calls guangde's HTTP/JSON WhoAmI through the published port"
[ -x "$PYTHON" ] || fail "no $PYTHON: run tests/interop/run.sh first (it installs cryptography and pyOpenSSL)"
peer="$work/peer"
mkdir -p "$peer"
cp "$work/certs/ca.crt" "$peer/ca.crt"
cp "$work/certs/guangde/client.crt" "$peer/client.crt"
cp "$work/certs/guangde/client.key" "$peer/client.key"
said=$("$PYTHON" tests/interop/gm_peer.py call "$peer" "$YRD_GUANGDE_PORT" /v1/whoami)
echo "$said"
grep -q 'suite TLS_SM4_GCM_SM3' <<<"$said" || fail "OpenSSL did not negotiate TLS_SM4_GCM_SM3"
grep -q '"tlsGroup":"curveSM2"' <<<"$said" || fail "the gateway did not see curveSM2"
grep -q '"cryptoProfile":"gm"' <<<"$said" || fail "guangde does not say gm"
# The port peers dial too: OpenSSL holding the zone's gateway certificate, as the zone's
# gateway dials guangde's (a gateway identity may not call WhoAmI, so the answer is a refusal
# after an RFC 8998 handshake).
cp "$work/certs/zone/gateway.crt" "$peer/client.crt"
cp "$work/certs/zone/gateway.key" "$peer/client.key"
said=$("$PYTHON" tests/interop/gm_peer.py call "$peer" "$YRD_GUANGDE_PORT" /v1/whoami)
echo "$said" | head -2
grep -q 'suite TLS_SM4_GCM_SM3' <<<"$said" || fail "the link handshake was not TLS_SM4_GCM_SM3"

step "every peer shows the same party list and profile"
differs() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  awk '$1 ~ /^yrd_membership_differs\{/ { s += $2; n++ } END { if (n < 3) exit 1; print s }' <&3
  exec 3<&-
}
for port in $YRD_ZONE_ADMIN_PORT $YRD_CHANGXING_ADMIN_PORT $YRD_ANJI_ADMIN_PORT $YRD_GUANGDE_ADMIN_PORT; do
  eventually 60 differs "$port" || fail "admin $port: not every peer has shown its digest"
  [ "$(differs "$port")" = 0 ] || fail "admin $port: a peer's party list or profile differs"
done
echo "no peer differs"

step "inside each container: the audit chain and the SM2-signed evidence verify"
for party in zone changxing anji guangde; do
  echo "-- at $party"
  docker exec "$(container "$party")" yrd-gateway audit verify --config /etc/yrd/gateway.toml ||
    fail "$party's audit chain does not verify"
  docker exec "$(container "$party")" yrd-gateway audit verify-evidence --config /etc/yrd/gateway.toml ||
    fail "$party's evidence does not verify"
done

step "compose gm scenario passed"
echo "1 passed, 0 failed"
