"""A simulated cluster on this machine: several Ray nodes with declared CPUs, PostgreSQL for
Optuna and an MLflow tracking server (on the same PostgreSQL), and studies of sleeping trials
with 32 running at once; the driver's figures at 1,000 and 2,000 trials.

The nodes are Ray's own test-cluster utility (``ray.cluster_utils.Cluster``: a head and worker
nodes, each a real raylet with its own object store, on loopback); PostgreSQL and the MLflow
server are the ones the cluster tests start (``tests/servers.py``). The trials are the no-op
trainer sleeping ``--sleep`` seconds per epoch (one declared CPU each), so the nodes' CPUs are
declared, not used: what is measured is the driver and the stores.

Printed for each study (``bench/driver_scale.py`` prints the same fields): trials per second,
the driver's CPU seconds per trial, SQL statements to PostgreSQL and HTTP requests to the
MLflow server per trial, per 100-trial window; how many ran at once; and exact counts by state
in Optuna and among the MLflow child runs, which must agree.

Memory: each of the 32 Ray workers imports torch (about 0.3 GB each).

Usage: python bench/cluster_scale.py [--nodes 4] [--cpus-per-node 8] [--trials 1000 2000]
       [--sleep 1.0] [--epochs 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import driver_scale  # noqa: E402
from driver_probe import Probe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--cpus-per-node", type=int, default=8)
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--sleep", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # As the CLI does: MLflow prints a line per run it ends over HTTP otherwise.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from ray.cluster_utils import Cluster

    from tests.servers import MlflowServer, postgres_server

    concurrency = args.nodes * args.cpus_per_node
    probe = Probe().install()
    with tempfile.TemporaryDirectory(prefix="searchsvc-cluster-") as tmp, postgres_server() as pg:
        started = time.monotonic()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus_per_node})
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=args.cpus_per_node)
        cluster.wait_for_nodes()
        server = MlflowServer(f"{pg}/mlflow", Path(tmp) / "artifacts").start()
        print(f"setup: {args.nodes} Ray nodes of {args.cpus_per_node} declared CPUs "
              f"(ray.cluster_utils.Cluster), PostgreSQL for Optuna and MLflow, an MLflow "
              f"server ({server.url}); {concurrency} concurrent no-op trials of 1 CPU, "
              f"{args.epochs} epochs of {args.sleep} s; started in "
              f"{time.monotonic() - started:.0f} s")  # fmt: skip
        try:
            for n in args.trials:
                study = driver_scale.parse_args([
                    "--trials", str(n), "--concurrency", str(concurrency), "--cpus", "1",
                    "--epochs", str(args.epochs), "--sleep", str(args.sleep),
                    "--storage", f"{pg}/optuna", "--tracking-uri", server.url,
                    "--address", cluster.address,
                ])  # fmt: skip
                print(f"--- {n} trials")
                probe.snapshots.clear()
                workdir = Path(tmp) / f"study-{n}"
                workdir.mkdir()
                result, wall, returned = driver_scale.run(study, workdir, probe)
                figures = driver_scale.report(study, result, wall, returned, probe)
                print(f"trials per second: {figures['trials'] / wall:.2f} (whole run, "
                      f"{wall:.0f} s)")  # fmt: skip
                if not figures["agree"]:
                    raise SystemExit(1)
        finally:
            server.stop()
            cluster.shutdown()


if __name__ == "__main__":
    main()
