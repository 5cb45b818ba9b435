#!/bin/sh
# Run once by Patroni on the first primary, right after initdb (its argument: a connection
# string for the superuser): the gateways' role `yrd`, with the password they read from the
# shared secret, owning the database `yrd_zone`.
set -eu
password=$(cat "${YRD_SECRET_FILE:-/run/yrd-secret/postgres-password}")
psql -v ON_ERROR_STOP=1 -q -d "$1" -v password="$password" <<'SQL'
CREATE ROLE yrd LOGIN PASSWORD :'password';
CREATE DATABASE yrd_zone OWNER yrd;
SQL
