#!/bin/sh
# As the official redis image does: a redis-server started without a config file accepts
# connections from other containers (protected mode off; keep the port off public networks).
# A config file stays the first argument, as redis-server requires; --version/--help pass as
# they are.
set -e
if [ "${1:-}" = "redis-server" ]; then
    shift
    case "${1:-}" in
        -v | --version | -h | --help) ;;
        *.conf)
            conf=$1
            shift
            set -- "$conf" --protected-mode no "$@"
            ;;
        *) set -- --protected-mode no "$@" ;;
    esac
    set -- redis-server "$@"
fi
exec "$@"
