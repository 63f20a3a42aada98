"""Scores of predicted σ against observed errors (equipot/uncertainty/scores.py), checked on
errors drawn from known distributions and against scipy."""

import numpy as np
import pytest
from scipy.stats import norm

from equipot.uncertainty.scores import (
    binned_rmse,
    gaussian_nll,
    miscalibration_area,
    spearman,
    uncertainty_report,
)

RNG = np.random.default_rng(0)
SIGMAS = RNG.uniform(0.1, 2.0, 20000)
ERRORS = RNG.normal(size=SIGMAS.shape) * SIGMAS


def test_a_calibrated_gaussian_has_no_miscalibration_and_an_overconfident_one_has():
    assert miscalibration_area(ERRORS, SIGMAS) < 0.01
    overconfident = miscalibration_area(ERRORS, SIGMAS / 3)
    assert 0.2 < overconfident < 0.5
    # Expected area of σ/3: ∫ |P(|z| ≤ z_p/3) − p| dp, by quadrature of the normal CDF.
    p = np.linspace(0, 1, 2001)[1:-1]
    expected = np.trapezoid(np.abs(2 * norm.cdf(3 * norm.ppf((1 + p) / 2)) - 1 - p), p)
    assert overconfident == pytest.approx(expected, abs=0.01)


def test_nll_is_scipys():
    assert gaussian_nll(ERRORS, SIGMAS) == pytest.approx(
        -norm.logpdf(ERRORS, scale=SIGMAS).mean(), rel=1e-12)


def test_spearman_ranks_errors_by_sigma():
    assert spearman(SIGMAS, ERRORS) > 0.4  # |N(0, σ²)| grows with σ, with scatter
    assert spearman(SIGMAS, SIGMAS * 3) == pytest.approx(1.0)
    assert spearman(SIGMAS, -SIGMAS) == pytest.approx(1.0)  # magnitudes are ranked
    assert np.isnan(spearman(np.ones(5), np.arange(5)))


def test_binned_rmse_lies_on_the_diagonal_when_calibrated():
    sigma, rmse = binned_rmse(ERRORS, SIGMAS, bins=10)
    np.testing.assert_allclose(rmse, sigma, rtol=0.05)
    assert np.all(np.diff(sigma) > 0)


def test_the_report_scores_structures_atoms_and_per_structure_force_errors():
    structures = np.repeat(np.arange(100), 5)  # 100 structures of 5 atoms
    sigma_atom = np.repeat(RNG.uniform(0.1, 1.0, 100), 5)
    force_errors = RNG.normal(size=(500, 3)) * sigma_atom[:, None]
    report = uncertainty_report(ERRORS[:100], SIGMAS[:100], force_errors, sigma_atom,
                                structures)
    assert set(report) == {"energy", "forces", "forces_per_structure"}
    assert report["forces_per_structure"]["spearman"] > 0.8  # 15 components per structure
    assert report["forces"]["miscalibration_area"] < 0.05
