"""The drift statistics (pipeline/core/drift.py): each test is silent on two samples of one distribution, at about
the rate it claims, and fires on a shift."""
from __future__ import annotations

import numpy as np

from pipeline.core import drift


def test_mmd_permutation_p_value_is_calibrated_and_fires_on_a_shift():
    rng = np.random.default_rng(0)
    p_same = [drift.mmd_check("e", rng.normal(size=(60, 4)), rng.normal(size=(40, 4)), rng, 200).p_value
              for _ in range(60)]
    # Under the null a permutation p-value is uniform: about 5% below 0.05 (binomial slack for 60 draws).
    assert np.mean(np.array(p_same) < 0.05) <= 0.12
    assert 0.3 < np.mean(p_same) < 0.7
    shifted = drift.mmd_check("e", rng.normal(size=(200, 4)), rng.normal(size=(100, 4)) + 0.6, rng, 500)
    assert shifted.p_value == 1 / 501  # beyond every permutation


def test_permutations_reach_below_the_threshold():
    assert 1 / (1 + drift.permutations_for(0.01 / 6)) < 0.01 / 6


def test_chi2_pools_rare_categories_and_reports_shares():
    same = drift.chi2_check("c", ["a"] * 80 + ["b"] * 20, ["a"] * 41 + ["b"] * 9)
    assert same.p_value > 0.3
    shifted = drift.chi2_check("c", ["a"] * 80 + ["b"] * 20, ["a"] * 10 + ["b"] * 40)
    assert shifted.p_value < 1e-6 and shifted.effect["current_share"]["b"] == 0.8
    one_category = drift.chi2_check("c", ["a"] * 10, ["a"] * 7)
    assert one_category.p_value == 1.0
    # Categories with expected counts under 5 are pooled, so two rare scripts do not make a significant table.
    rare = drift.chi2_check("c", ["latin"] * 200 + ["greek"], ["latin"] * 99 + ["han"])
    assert rare.p_value > 0.05


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    ref = rng.random(5000)
    assert drift.psi(ref, rng.random(5000)) < 0.01
    assert drift.psi(ref, rng.random(5000) ** 3) > 0.2


def test_script_of_names_each_texts_main_script():
    assert [drift.script_of(t) for t in ["hello there", "Привет, мир", "你好世界", "مرحبا", "12 34", "Ελλάδα ok"]] \
        == ["latin", "cyrillic", "han", "arabic", "none", "greek"]


def test_rare_token_share_ignores_special_tokens():
    counts = {1: 5, 2: 1}
    share = drift.rare_token_share([[1, 2, 3, 0], [0], [1, 1]], counts, special={0})
    assert share.tolist() == [2 / 3, 0.0, 0.0]


def test_verdict_is_bonferroni_over_the_checks_that_ran():
    checks = [drift.Check("a", "t", 1.0, 0.004), drift.Check("b", "t", 1.0, 0.3),
              drift.skipped("c", "t", "no text")]
    v = drift.verdict(checks, alpha=0.01)
    assert v["per_check_threshold"] == 0.005 and v["checks_run"] == 2
    assert v["drift"] and v["fired"] == ["a"] and checks[2].drift is False
