"""Shared test setup: offline, quiet, and one Ray instance for the whole session (Ray start-up costs
seconds; sharing it keeps the suite fast)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from smctune.errors import UserError

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the empty MLflow store every new sweep copies (smctune/tracking/sqlite_template.py): built once per
# machine and MLflow version here, not in the home directory of whoever runs the tests
os.environ.setdefault("SMCTUNE_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"smctune-test-cache-{os.getuid()}"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def ray_session():
    """One Ray per test worker, with one CPU: the two test workers share the machine's two cores, and
    a sweep's one-CPU trials then run one at a time in a single trial worker that Tune reuses. Two
    trial workers would each import ray.tune, torch and transformers (7-10 CPU-seconds) for trials
    that run about a second. Tests that need two trials at once start a Ray of their own
    (test_cli.py's interrupted sweep, the multi-node harness)."""
    from smctune.sweep.ray_session import ensure_ray

    ensure_ray(num_cpus=1)
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_session) -> str:
    """The session's Ray, for a CLI sweep in a subprocess to join (``RAY_ADDRESS``, as on a cluster)
    instead of starting and stopping a Ray of its own (about 6 CPU-seconds each on 2 cores).
    test_cli.py's interrupted sweep keeps the standalone start, what a laptop user runs."""
    import ray

    return ray.get_runtime_context().gcs_address


def joined(env: dict, ray_address: str) -> dict:
    """``env`` for a subprocess that joins the session's Ray at ``ray_address``."""
    return dict(env, RAY_ADDRESS=ray_address)


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: intra-op threads only add contention (seconds per test on a busy 2-core box)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """CSQA's search space with test_sweep.FAST_SPACE's settings (tiny smoke trials); a test module
    that needs other settings defines its own ``space``."""
    from smctune.config.search_space import load_search_space
    from test_sweep import FAST_SPACE

    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(FAST_SPACE)
    return load_search_space("csqa", str(path))


def last_reports(trials) -> list[dict]:
    """Each planned ``TrialSpec`` of ``trials`` through ``Trial.run`` in this process, in order: the last
    report of each. For tests of what a trial reads (a data layout), which Ray does not change."""
    from smctune.train.trial import CallbackReporter, Trial

    last = []
    for trial in trials:
        reporter = CallbackReporter()
        Trial(trial, reporter, device="cpu").run()
        last.append(reporter.reports[-1])
    return last


def fails(match: str, call, *args, **kwargs) -> str:
    """``call`` raises a one-line UserError matching ``match``; returns the message."""
    with pytest.raises(UserError, match=match) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def pytest_collection_modifyitems(items):
    """Modules with whole sweeps (the session's Ray) or ``slow`` tests run first. The suite runs on
    two workers, each taking a whole module at a time (``--dist loadfile``, so a module's fixtures are
    built once): long modules first leaves short ones to even out the end, instead of one worker
    finishing a long sweep module alone."""
    heavy = {item.module.__name__ for item in items
             if "ray_session" in item.fixturenames or item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in heavy)   # stable: order kept within each

