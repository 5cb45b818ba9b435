#!/bin/sh
# One-shot before the database nodes start: a development CA for the database and a
# certificate per node (its name as the DNS name the gateways verify), the superuser and
# replication passwords, and the gateways' password. Files that exist are kept, so a restart
# changes nothing. Production: certificates from your own CA, passwords from your secret store.
set -eu
certs=${DB_CERT_DIR:-/run/db-certs}
secrets=${DB_SECRET_DIR:-/run/db-secret}
app_secret=${YRD_SECRET_FILE:-/run/yrd-secret/postgres-password}
nodes=${DB_NODES:-pg-1 pg-2 pg-3}
umask 077
mkdir -p "$certs" "$secrets"
for name in superuser-password replication-password; do
  [ -s "$secrets/$name" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secrets/$name"
done
# The gateways' password (role yrd), on a volume of its own that they mount; readable by the
# database nodes' post-bootstrap step too.
mkdir -p "$(dirname "$app_secret")"
[ -s "$app_secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$app_secret"
chmod 644 "$app_secret"
if [ ! -s "$certs/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=yrd database CA" -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
  echo "created the database CA"
fi
chmod 644 "$certs/ca.crt"
for node in $nodes; do
  [ -s "$certs/$node.crt" ] && continue
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$node" \
    -keyout "$certs/$node.key" -out "$certs/$node.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$node" >"$certs/$node.ext"
  openssl x509 -req -in "$certs/$node.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
    -CAcreateserial -days 825 -extfile "$certs/$node.ext" -out "$certs/$node.crt" 2>/dev/null
  rm -f "$certs/$node.csr" "$certs/$node.ext"
  echo "created the certificate of $node"
done
