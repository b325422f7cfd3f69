"""The one-standard-error rule (saeprobe.selection)."""

import numpy as np
import pytest

from saeprobe.selection import one_se_band, one_se_choice, standard_error


def test_standard_error_is_std_over_root_folds():
    assert standard_error(0.1, 4) == pytest.approx(0.05)
    np.testing.assert_allclose(standard_error([0.2, 0.3], [4, 9]), [0.1, 0.1])
    with pytest.raises(ValueError, match="folds"):
        standard_error(0.1, 0)


def test_band_holds_the_candidates_within_one_se_of_the_best():
    means = np.array([0.80, 0.85, 0.86, 0.70, np.nan])
    ses = np.array([0.01, 0.02, 0.02, 0.01, 0.0])
    np.testing.assert_array_equal(one_se_band(means, ses), [False, True, True, False, False])


def test_choice_is_the_simplest_in_the_band_whatever_the_order():
    # C = 0.01, 0.1, 1, 10: a flat curve from 0.1 on; argmax would pick 1 (or 10 on another tie-break).
    Cs = [0.01, 0.1, 1.0, 10.0]
    means = [0.70, 0.851, 0.853, 0.853]
    ses = [0.01, 0.01, 0.01, 0.01]
    assert Cs[one_se_choice(means, ses, Cs)] == 0.1
    order = [3, 1, 2, 0]
    assert [Cs[i] for i in order][one_se_choice([means[i] for i in order], [ses[i] for i in order],
                                                [Cs[i] for i in order])] == 0.1


def test_tied_best_means_use_the_widest_se():
    np.testing.assert_array_equal(one_se_band([0.9, 0.9, 0.85], [0.0, 0.06, 0.0]), [True, True, True])
    np.testing.assert_array_equal(one_se_band([0.9, 0.9, 0.85], [0.06, 0.0, 0.0]), [True, True, True])


def test_no_score_is_an_error():
    with pytest.raises(ValueError, match="no candidate"):
        one_se_choice([np.nan], [0.0])
