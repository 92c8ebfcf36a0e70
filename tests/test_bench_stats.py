"""bench.stats against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.stats import (
    bootstrap_means,
    changed_share,
    dodge_rate,
    dodged,
    mann_whitney,
    permutation_test,
    psnr,
    ssim,
    ssim_local_change,
    summaries,
    summary,
)


def test_psnr_of_a_known_mse() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 48  # one value off by 48 among 48 values: MSE = 48² / 48 = 48
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 48))
    c = np.full_like(a, 10)  # every value off by 10: MSE = 100 -> 10 log10(650.25) = 28.1308 dB
    assert psnr(a, c) == pytest.approx(28.1308, abs=1e-4)
    assert psnr(a, a) == math.inf


def test_ssim_identity_and_damage() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    b = a.copy()
    b[8:24, 8:24] = 0
    assert 0 < ssim(a, b) < 0.9
    with pytest.raises(ValueError, match="7x7"):
        ssim(a[:5, :5], a[:5, :5])


def test_changed_share_counts_pixels_not_channels() -> None:
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1  # one channel of one pixel
    b[1, 1] = 255  # all channels of another
    assert changed_share(a, b) == pytest.approx(2 / 100)
    with pytest.raises(ValueError, match="shape"):
        changed_share(a, b[:5])


def test_summary_values_and_deterministic_ci() -> None:
    s = summary([1.0, 2.0, 3.0, 4.0], seed=1)
    assert s["mean"] == 2.5
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))  # sample std (ddof=1)
    assert s["n"] == 4
    lo, hi = s["ci95"]
    assert 1.0 <= lo <= 2.5 <= hi <= 4.0
    assert summary([1.0, 2.0, 3.0, 4.0], seed=1) == s  # same seed, same interval
    rng_values = np.random.default_rng(5).normal(0.1, 0.05, 200)
    s2 = summary(rng_values, seed=0)
    assert s2["ci95"][0] < s2["mean"] < s2["ci95"][1]
    # The 95 % interval of a mean of 200 N(0.1, 0.05) is about ±1.96·0.05/√200 = ±0.0069 wide each side.
    assert s2["ci95"][1] - s2["ci95"][0] == pytest.approx(2 * 1.96 * 0.05 / math.sqrt(200), rel=0.25)
    assert summary(rng_values, seed=1)["ci95"] != s2["ci95"]


def test_summary_edge_cases() -> None:
    assert summary([]) == {"mean": None, "std": None, "ci95": None, "n": 0}
    assert summary([0.5]) == {"mean": 0.5, "std": 0.0, "ci95": [0.5, 0.5], "n": 1}
    with pytest.raises(ValueError, match="NaN"):
        summary([1.0, float("nan")])


def test_summaries_share_resamples_and_match_summary() -> None:
    x = np.arange(10.0)
    out = summaries({"a": x, "b": 2 * x}, seed=3)
    assert out["a"] == summary(x, seed=3)
    # Shared resample rows: b's bootstrap means are exactly twice a's, so is its interval.
    assert out["b"]["ci95"] == pytest.approx([2 * v for v in out["a"]["ci95"]])
    with pytest.raises(ValueError, match="length"):
        summaries({"a": [1, 2], "b": [1]})


def test_bootstrap_means_of_a_constant_are_constant() -> None:
    assert np.all(bootstrap_means([3.0, 3.0, 3.0], seed=0, n_resamples=50) == 3.0)


def test_mann_whitney_on_separated_and_equal_samples() -> None:
    a = np.arange(20) + 100.0
    b = np.arange(20) * 1.0
    # Complete separation, 20 + 20 (normal approximation with continuity correction): U = 400, mean 200,
    # sd = sqrt(20·20·41/12), z = (400 − 200 − 0.5) / sd = 5.3966, one-sided p = erfc(z/√2)/2 = 3.398e-8.
    z = (400 - 200 - 0.5) / math.sqrt(20 * 20 * 41 / 12)
    assert mann_whitney(a, b, alternative="greater") == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-6)
    # Small samples use the exact distribution: separation of 4 vs 3 has p = 1 / C(7, 3) = 1/35 one-sided.
    assert mann_whitney([10, 11, 12, 13], [1, 2, 3], alternative="greater") == pytest.approx(1 / 35)
    assert mann_whitney(a, b) == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-6)  # two-sided: twice
    assert mann_whitney(b, b) == pytest.approx(1.0)


def test_permutation_test() -> None:
    a = np.arange(20) + 100.0
    b = np.arange(20) * 1.0
    n = 2000
    # No permutation reaches the observed difference: p = 1 / (n + 1), the smallest it can be.
    assert permutation_test(a, b, np.random.default_rng(0), n=n) == pytest.approx(1 / (n + 1))
    same = permutation_test(b, b[::-1], np.random.default_rng(0), n=n)
    assert same == pytest.approx(1.0)  # observed difference 0: every permutation is as extreme
    assert permutation_test(a, b, 7, n=500) == permutation_test(a, b, 7, n=500)


def test_dodge_rate_hand_example() -> None:
    cos = [
        np.array([0.1, 0.2]),  # below 0.3 for every reference: dodged
        np.array([0.1, 0.35]),  # one reference still matches: not dodged
        np.array([0.29]),  # dodged
        np.array([0.3]),  # at the threshold: not below, not dodged
    ]
    assert dodged(cos, 0.3).tolist() == [True, False, True, False]
    assert dodge_rate(cos, 0.3) == 0.5
    assert dodge_rate(cos, 0.05) == 0.0
    with pytest.raises(ValueError, match="no clean reference"):
        dodge_rate([np.array([])], 0.3)


@pytest.mark.parametrize("shape", [(250, 250, 3), (120, 90, 3), (40, 60), (16, 16, 3)])
def test_ssim_local_change_equals_whole_photo_ssim(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 150, shape[1])[None, :] if len(shape) == 2 else np.linspace(0, 150, shape[1])[None, :, None]
    a = (rng.integers(0, 256, shape) * 0.3 + ramp).astype(np.uint8)
    b = a.copy()
    b[5:12, 2:9] = 0  # a dot near the edge ...
    b[shape[0] - 3 :, shape[1] - 2 :] = 255  # ... and one in the corner, inside the 3-pixel border
    assert ssim_local_change(a, b) == pytest.approx(ssim(a, b), abs=1e-9)
    assert ssim_local_change(a, a) == 1.0
