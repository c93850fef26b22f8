"""Normalizer: the three modes, streaming statistics, save/load, bad input."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from mechrec.normalization import NORMALIZER_FILENAME, Normalizer, RunningMoments


def _data(n: int = 500, d: int = 6, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.1, 1.0, 5.0, 20.0, 2.0, 0.5])[:d]
    return torch.randn(n, d, generator=gen) * scale + torch.arange(d) * 3.0


def test_per_dim_standardises_every_dimension():
    x = _data()
    norm = Normalizer.fit(x, "per_dim")
    z = norm.normalize(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.denormalize(z), x, atol=1e-4, rtol=1e-5)
    assert norm.n_rows == 500


def test_scalar_uses_one_scale_and_keeps_mean_square_norm_d():
    x = _data()
    norm = Normalizer.fit(x, "scalar")
    assert torch.all(norm.std == norm.std[0])
    z = norm.normalize(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    assert z.pow(2).sum(-1).mean().item() == pytest.approx(6.0, rel=1e-4)


def test_none_is_identity():
    x = _data()
    norm = Normalizer.fit(x, "none")
    assert torch.equal(norm.normalize(x), x)
    assert torch.equal(norm.denormalize(x), x)
    assert torch.equal(norm.mean, torch.zeros(6)) and torch.equal(norm.std, torch.ones(6))


def test_constant_dimension_is_centred_not_blown_up():
    x = _data()
    x[:, 2] = 7.0
    z = Normalizer.fit(x).normalize(x)
    assert torch.equal(z[:, 2], torch.zeros(500))


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6), seed=st.integers(0, 9))
def test_streaming_moments_equal_whole_tensor(cuts, seed):
    x = _data(300, seed=seed).double() * 1000 + 1e6  # large offset: a naive sum would drift
    bounds = sorted({0, 300, *cuts})
    moments = RunningMoments()
    for a, b in itertools.pairwise(bounds):
        moments.update(x[a:b])
    assert moments.count == 300
    torch.testing.assert_close(moments.mean, x.mean(0), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(moments.variance, x.var(0, unbiased=False), rtol=1e-9, atol=1e-6)


def test_save_load_roundtrip(tmp_path):
    norm = Normalizer.fit(_data(), "scalar")
    path = norm.save(tmp_path / NORMALIZER_FILENAME)
    loaded = Normalizer.load(path)
    assert loaded.mode == "scalar" and loaded.n_rows == 500
    assert torch.equal(loaded.mean, norm.mean) and torch.equal(loaded.std, norm.std)
    assert [p.name for p in tmp_path.iterdir()] == [NORMALIZER_FILENAME]  # no temp file left


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="normaliser file"):
        Normalizer.load(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"mean": torch.zeros(3)}, str(other))
    with pytest.raises(ValueError, match="not a mechrec normaliser"):
        Normalizer.load(other)


def test_bad_input_is_named():
    x = _data()
    x[3, 1] = float("nan")
    x[4, 0] = float("inf")
    with pytest.raises(ValueError, match="1 NaN and 1 infinite"):
        Normalizer.fit(x)
    with pytest.raises(ValueError, match="zero rows"):
        Normalizer.fit(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="unknown normalisation mode"):
        Normalizer.fit(_data(), "zscore")
    with pytest.raises(ValueError, match="fitted on 6"):
        Normalizer.fit(_data()).normalize(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="strictly positive"):
        Normalizer("per_dim", torch.zeros(2), torch.tensor([1.0, 0.0]))
    moments = RunningMoments()
    moments.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="earlier chunks had 3"):
        moments.update(torch.zeros(2, 4))


def test_merged_moments_equal_moments_of_all_rows() -> None:
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole, first, second, empty = (RunningMoments() for _ in range(4))
    whole.update(x)
    first.update(x[:13])
    second.update(x[13:])
    empty.merge(first)  # into nothing: takes the other's width
    empty.merge(second)
    empty.merge(RunningMoments())  # merging nothing changes nothing
    assert empty.count == whole.count == 50
    torch.testing.assert_close(empty.mean, whole.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(empty.m2, whole.m2, rtol=1e-12, atol=1e-12)
    other = RunningMoments()
    other.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="cannot merge"):
        empty.merge(other)
