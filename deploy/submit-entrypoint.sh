#!/bin/sh
# Entry point of the compose `searchsvc` service: join the Ray cluster as a node without CPUs
# (a Ray driver needs a local raylet), run the given command as the driver, and stop the node
# afterwards. SIGTERM and SIGINT (docker stop, Ctrl-C) are passed on to the driver, which
# ends cleanly (exit 130, finished trials kept); the node is stopped once it has.
set -u
ray start --address "${RAY_HEAD:-ray-head:6379}" --num-cpus 0 --disable-usage-stats >/dev/null \
    || exit 1
"$@" &
driver=$!
trap 'kill -TERM "$driver" 2>/dev/null' TERM
trap 'kill -INT "$driver" 2>/dev/null' INT
status=0
# wait returns early when a trapped signal arrives: wait again until the driver has ended.
while kill -0 "$driver" 2>/dev/null; do
    wait "$driver"
    status=$?
done
ray stop --force >/dev/null 2>&1
exit "$status"
