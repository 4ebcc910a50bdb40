#!/bin/sh
# Entry point of the compose `searchsvc` service: join the Ray cluster as a node without CPUs
# (a Ray driver needs a local raylet), then run the given command as the driver.
set -e
ray start --address "${RAY_HEAD:-ray-head:6379}" --num-cpus 0 --disable-usage-stats >/dev/null
trap 'ray stop --force >/dev/null 2>&1' EXIT
"$@"
