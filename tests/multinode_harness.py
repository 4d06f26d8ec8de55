"""A sweep on a Ray cluster in one process tree (Ray's own multi-node test harness,
``ray.cluster_utils.Cluster``): a head without trial slots and two worker nodes of one slot each;
once a trial has a checkpoint, one worker node is removed while its trial runs.

Run by tests/test_multinode.py in a subprocess (its own Ray, apart from the test session's);
prints one JSON line with what the test checks. Usage: python multinode_harness.py WORKDIR
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from test_sweep import FAST_SPACE

# one CPU per trial: each worker node has one
SLOW_SPACE = FAST_SPACE.replace("max_steps: 8", "max_steps: 400").replace("eval_every: 4", "eval_every: 50")


def main(workdir: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from smctune.sweep import cluster as cluster_checks
    from smctune.sweep.driver import sweep

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})   # the head runs no trial
    # two worker nodes of one slot each: the sweep's two stage-1 trials run one per node
    first, _ = cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    # every node shares this machine's filesystem: the storage and the sqlite store are shared
    # storage here, which the multi-node refusal (meant for separate machines) cannot know
    cluster_checks.check_cluster = lambda *args, **kwargs: None

    storage = workdir / "runs"
    space = workdir / "space.yaml"
    space.write_text(SLOW_SPACE)
    removed = []

    def remove_a_busy_node():
        """Once both trials have a checkpoint (so the first node's trial has one to resume from, however
        slowly a loaded machine started them), the first node leaves the cluster (from this thread:
        Ray adds nodes from the main thread only, removing one is fine)."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if len({p.parent for p in (storage / "multi" / "ray").glob("stage1/*/checkpoint_*")}) >= 2:
                time.sleep(0.5)   # let the driver register the checkpoint first (Ray's semantics)
                cluster.remove_node(first)
                removed.append(True)
                return
            time.sleep(0.1)

    chaos = threading.Thread(target=remove_a_busy_node, daemon=True)
    chaos.start()
    result = sweep("csqa", methods="dense,gmp", sparsities=(0.5,), preset="smoke", search_space=space,
                   storage=storage, name="multi", max_failures=3, verbosity=0, report=False)
    chaos.join(timeout=5)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(result.spec.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("smctune/multi").experiment_id])
    records = {p.stem: json.loads(p.read_text()) for p in (storage / "multi" / "results").glob("*.json")}
    print(json.dumps({
        "removed": removed, "trials_run": result.trials_run,
        "records": {k: {f: r.get(f) for f in ("status", "retries", "resumed_from", "cached", "error")}
                    for k, r in records.items()},
        "run_statuses": sorted(r.info.status for r in runs),
    }))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
