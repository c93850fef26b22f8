"""The shared byte-level helpers: safetensors bytes, weight hashes and settings digests."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mechrec._io import (
    json_sha256,
    safetensors_bytes,
    save_safetensors_atomically,
    sha256_file,
    state_dict_sha256,
)


class _Tied(torch.nn.Module):
    """Two names for one weight, as a tied embedding and unembedding have."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(3, 4, bias=False)
        self.unembed = torch.nn.Linear(3, 4, bias=False)
        self.unembed.weight = self.embed.weight


def test_state_dict_hash_is_the_hash_of_the_saved_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Linear(5, 3)
    path = save_safetensors_atomically(tmp_path / "w.safetensors", module.state_dict(),
                                       {"format": "test"})
    assert state_dict_sha256(module, {"format": "test"}) == sha256_file(path)
    assert state_dict_sha256(module) != state_dict_sha256(module, {"format": "test"})
    loaded = load_file(path)
    assert torch.equal(loaded["weight"], module.weight.detach())


def test_a_hash_refuses_metadata_whose_order_is_not_fixed() -> None:
    module = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="at most one metadata key"):
        state_dict_sha256(module, {"a": "1", "b": "2"})
    assert state_dict_sha256(module.state_dict()) == state_dict_sha256(module)


def test_hash_changes_with_any_weight() -> None:
    torch.manual_seed(0)
    module = torch.nn.Linear(5, 3)
    before = state_dict_sha256(module)
    with torch.no_grad():
        module.bias[1] += 1e-6
    assert state_dict_sha256(module) != before


def test_tied_weights_are_written_as_copies(tmp_path: Path) -> None:
    module = _Tied()
    data = safetensors_bytes(module.state_dict())
    path = tmp_path / "tied.safetensors"
    path.write_bytes(data)
    loaded = load_file(path)
    assert torch.equal(loaded["embed.weight"], loaded["unembed.weight"])
    assert state_dict_sha256(module) == state_dict_sha256(module)


def test_non_contiguous_tensors_are_saved_by_value() -> None:
    base = torch.arange(12.0).reshape(3, 4)
    assert safetensors_bytes({"x": base.t()}) == safetensors_bytes({"x": base.t().contiguous()})


def test_json_digest_ignores_key_order_and_tuples_but_not_values() -> None:
    a = json_sha256({"b": (1, 2), "a": 0.5})
    assert a == json_sha256({"a": 0.5, "b": [1, 2]})
    assert a != json_sha256({"a": 0.25, "b": [1, 2]})
    assert json_sha256({"x": math.nan}) == json_sha256({"x": None})
    assert len(a) == 64
