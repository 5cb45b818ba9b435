#!/bin/sh
# The role of this container (see the Dockerfile): `etcd ARGS...`, `db-init`, or, by default,
# a PostgreSQL node under Patroni named $PATRONI_NAME, which other nodes and the gateways
# reach under that name.
set -eu
case "${1:-patroni}" in
  etcd)
    shift
    chown etcd /var/lib/etcd
    exec runuser -u etcd -- etcd --data-dir /var/lib/etcd/data "$@"
    ;;
  db-init)
    exec sh /usr/local/bin/db-init.sh
    ;;
  patroni) ;;
  *)
    exec "$@"
    ;;
esac

: "${PATRONI_NAME:?set PATRONI_NAME to this node's name}"
secrets=${DB_SECRET_DIR:-/run/db-secret}
certs=${DB_CERT_DIR:-/run/db-certs}
export PATRONI_RESTAPI_CONNECT_ADDRESS="${PATRONI_RESTAPI_CONNECT_ADDRESS:-$PATRONI_NAME:8008}"
export PATRONI_POSTGRESQL_CONNECT_ADDRESS="${PATRONI_POSTGRESQL_CONNECT_ADDRESS:-$PATRONI_NAME:5432}"
PATRONI_SUPERUSER_PASSWORD=$(cat "$secrets/superuser-password")
PATRONI_REPLICATION_PASSWORD=$(cat "$secrets/replication-password")
PATRONI_REWIND_PASSWORD=$PATRONI_SUPERUSER_PASSWORD
export PATRONI_SUPERUSER_PASSWORD PATRONI_REPLICATION_PASSWORD PATRONI_REWIND_PASSWORD

# Nothing else runs in this container, so lock files left by a node that was killed are stale;
# PostgreSQL would refuse to start when their process id is reused by another process here.
rm -f /var/run/postgresql/.s.PGSQL.*.lock /var/lib/postgresql/data/postmaster.pid

# PostgreSQL wants its key owned by its own user and unreadable by others.
tls=/var/lib/postgresql/tls
mkdir -p "$tls"
cp "$certs/$PATRONI_NAME.crt" "$tls/server.crt"
cp "$certs/$PATRONI_NAME.key" "$tls/server.key"
chown -R postgres:postgres "$tls" /var/lib/postgresql/data
chmod 600 "$tls/server.key"
chmod 700 /var/lib/postgresql/data
exec runuser -u postgres -- patroni /etc/patroni/patroni.yml
