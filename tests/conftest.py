"""Shared fixtures: where the real MovieLens test data lives.

Tests read real files from ``$MECHREC_DATA`` or, by default, ``../shared/data`` beside the
repository. They never touch the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """wandb in offline mode writing under ``tmp_path`` (no network, no login); wandb's
    process-wide state is torn down around the test, so each test reads its own settings."""
    import wandb

    wandb.teardown()
    directory = tmp_path / "wandb-dir"
    directory.mkdir()
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(directory),
                        "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
                        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                        "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}.items():
        monkeypatch.setenv(name, value)
    yield directory
    wandb.teardown()
