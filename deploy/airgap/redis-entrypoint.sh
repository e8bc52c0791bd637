#!/bin/sh
# As the official redis image does: a redis-server started without a config file accepts
# connections from other containers (protected mode off; keep the port off public networks).
set -e
if [ "${1:-}" = "redis-server" ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
