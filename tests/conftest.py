"""Shared test setup: offline, quiet, and one Ray instance for the whole session (Ray start-up costs
seconds; sharing it keeps the suite fast)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from smctune.errors import UserError

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def ray_session():
    from smctune.sweep.ray_session import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    import ray

    ray.shutdown()


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


def fails(match: str, call, *args, **kwargs) -> str:
    """``call`` raises a one-line UserError matching ``match``; returns the message."""
    with pytest.raises(UserError, match=match) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message
