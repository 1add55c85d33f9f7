#!/bin/sh
# The entrypoint of the rivers image: one word says which rivers process this container is.
#
#   coordinator [ARGS]  rivers-coordinator --repo "$RIVERS_REPO"            (RIVERS_REPO=MODULE:ATTR)
#   worker [ARGS]       rivers-worker --executor parallel [--concurrency "$RIVERS_CONCURRENCY"]
#   launcher [ARGS]     rivers-worker --executor kubernetes                 (the pod launcher)
#   step STEP_ID        rivers-worker --executor kubernetes --step STEP_ID  (what a step pod runs)
#   anything else       run as given (`rivers submit examples.demo --wait`, `sh`, ...)
#
# Every one reads RIVERS_REDIS_URL and RIVERS_SECRET from the environment. exec: the rivers process is PID 1
# and gets SIGTERM itself (workers finish their running steps; a second SIGTERM hands them back).
set -eu

role="${1:-worker}"
[ "$#" -gt 0 ] && shift

case "$role" in
    coordinator)
        exec rivers-coordinator --repo "${RIVERS_REPO:?set RIVERS_REPO to the repository to serve, MODULE:ATTR}" "$@"
        ;;
    worker)
        if [ -n "${RIVERS_CONCURRENCY:-}" ]; then
            exec rivers-worker --executor parallel --concurrency "$RIVERS_CONCURRENCY" "$@"
        fi
        exec rivers-worker --executor parallel "$@"
        ;;
    launcher)
        exec rivers-worker --executor kubernetes "$@"
        ;;
    step)
        if [ "$#" -lt 1 ]; then
            echo "usage: $0 step STEP_ID" >&2
            exit 2
        fi
        step_id="$1"
        shift
        exec rivers-worker --executor kubernetes --step "$step_id" "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
