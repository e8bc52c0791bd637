#!/bin/sh
# The part of the official postgres image's entrypoint that compose.yaml relies on: on an empty
# data directory, create the cluster with POSTGRES_USER (superuser) / POSTGRES_PASSWORD and the
# database POSTGRES_DB, accept password (scram) connections from other hosts, then run the
# command (postgres). A non-empty data directory is used as it is.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
# postgres --version, --help, -C NAME...: no cluster needed (as in the official entrypoint).
server=
if [ "${1:-}" = "postgres" ]; then
    server=1
    for arg in "$@"; do
        case $arg in
            -V | --version | '-?' | --help | --describe-config | -C | -C*) server= ;;
        esac
    done
fi
if [ -n "$server" ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: set POSTGRES_PASSWORD" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA"
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # Socket only while the database is created: nothing connects before it exists.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    if [ "$POSTGRES_DB" != "postgres" ]; then
        createdb --username="$POSTGRES_USER" "$POSTGRES_DB"
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop
fi
if [ -n "$server" ]; then
    shift
    set -- postgres -D "$PGDATA" "$@"
fi
exec "$@"
