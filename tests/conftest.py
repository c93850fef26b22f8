"""Shared fixtures: where the real MovieLens test data lives.

Tests read real files from ``$MECHREC_DATA`` or, by default, ``../shared/data`` beside the
repository. They never touch the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The directory holding the MovieLens test copies."""
    env = os.environ.get("MECHREC_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the MovieLens test copies; fails loudly if they are missing."""
    root = shared_data_dir()
    if not (root / "ml-100k" / "u.data").is_file():
        pytest.fail(
            f"MovieLens test data not found under {root}: set MECHREC_DATA to the folder "
            "holding ml-100k/, ml-latest-small/, ... (see ../shared/data/README.md)"
        )
    return root
