"""How well predicted standard deviations σ match observed errors e = prediction − reference.

- ``spearman``: rank correlation between σ and |e| (does σ order the predictions by error?);
- ``miscalibration_area``: for a Gaussian error model, the fraction of errors inside the
  central interval of probability p should be p; the mean absolute gap between observed and
  expected fractions over p ∈ [0, 1] (0: perfect, 0.5: worst; Tran et al., MLST 1, 025006
  (2020));
- ``gaussian_nll``: mean negative log-likelihood of e under N(0, σ²) (lower is better);
- ``binned_rmse``: observed RMSE against RMS σ in bins of equal count, sorted by σ (on the
  diagonal when calibrated).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import erfinv
from scipy.stats import spearmanr

PROPORTIONS = np.linspace(0.0, 1.0, 101)


def spearman(sigmas: np.ndarray, errors: np.ndarray) -> float:
    """Spearman rank correlation of σ and |e| ([items] each); NaN for fewer than 3 items or a
    constant σ."""
    sigmas, errors = np.ravel(sigmas), np.abs(np.ravel(errors))
    if len(sigmas) < 3 or np.ptp(sigmas) == 0 or np.ptp(errors) == 0:
        return float("nan")
    return float(spearmanr(sigmas, errors).statistic)


def miscalibration_area(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """∫₀¹ |observed(p) − p| dp, observed(p) the fraction of |e| ≤ σ z_p, z_p = √2 erf⁻¹(p)
    (errors and σ of the same shape, σ > 0)."""
    normalized = np.abs(np.ravel(errors)) / np.ravel(sigmas)
    radii = math.sqrt(2.0) * erfinv(np.clip(PROPORTIONS, 0.0, 1.0 - 1e-12))
    observed = (normalized[None, :] <= radii[:, None]).mean(axis=1)
    return float(np.trapezoid(np.abs(observed - PROPORTIONS), PROPORTIONS))


def gaussian_nll(errors, sigmas) -> float:
    """Mean negative log-likelihood of ``errors`` under N(0, σ²) (tensors or arrays; σ
    broadcast to the errors)."""
    errors, sigmas = (torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x,
                                      dtype=torch.float64) for x in (errors, sigmas))
    variance = sigmas.square().clamp_min(1e-300)
    return float((0.5 * (torch.log(2 * math.pi * variance) + errors.square() / variance)).mean())


def binned_rmse(errors: np.ndarray, sigmas: np.ndarray, bins: int = 10
                ) -> tuple[np.ndarray, np.ndarray]:
    """(RMS σ, RMSE of e) [bins] over bins of equal count sorted by σ."""
    order = np.argsort(np.ravel(sigmas))
    groups = np.array_split(order, min(bins, len(order)))
    sigmas, errors = np.ravel(sigmas), np.ravel(errors)
    return (np.array([np.sqrt(np.mean(sigmas[g] ** 2)) for g in groups]),
            np.array([np.sqrt(np.mean(errors[g] ** 2)) for g in groups]))


def uncertainty_scores(errors: np.ndarray, sigmas: np.ndarray) -> dict[str, float]:
    """Spearman, miscalibration area and NLL of errors [items, components] against σ [items]
    (each component is one Gaussian draw of σ; the rank correlation reads the RMS over
    components per item)."""
    errors = np.asarray(errors, dtype=float).reshape(len(sigmas), -1)
    sigmas = np.asarray(sigmas, dtype=float)
    components = np.repeat(sigmas[:, None], errors.shape[1], axis=1)
    return {"spearman": spearman(sigmas, np.sqrt(np.mean(errors**2, axis=1))),
            "miscalibration_area": miscalibration_area(errors, components)
            if bool((sigmas > 0).all()) else float("nan"),
            "nll": gaussian_nll(errors, components)}


def uncertainty_report(energy_errors: np.ndarray, energy_sigmas: np.ndarray,
                       force_errors: np.ndarray, force_sigmas: np.ndarray,
                       force_structures: np.ndarray) -> dict[str, dict[str, float]]:
    """Scores of predicted σ against observed errors: ``energy`` per structure ([G] eV),
    ``forces`` per atom (errors [M, 3] eV/Å, σ [M]) and ``forces_per_structure`` (each
    structure's force RMSE against its atoms' RMS σ; ``force_structures`` [M]: the structure
    of each atom). Quantities without data are left out."""
    report = {}
    if len(energy_errors):
        report["energy"] = uncertainty_scores(np.asarray(energy_errors)[:, None], energy_sigmas)
    if len(force_errors):
        report["forces"] = uncertainty_scores(force_errors, force_sigmas)
        _, inverse = np.unique(force_structures, return_inverse=True)
        counts = np.bincount(inverse)
        rmse = np.sqrt(np.bincount(inverse, (np.asarray(force_errors) ** 2).mean(1)) / counts)
        sigma = np.sqrt(np.bincount(inverse, np.asarray(force_sigmas) ** 2) / counts)
        report["forces_per_structure"] = {"spearman": spearman(sigma, rmse)}
    return report


def format_uncertainty_table(report: dict[str, dict[str, float]]) -> str:
    """The report as a text table: one row per quantity."""
    lines = [f"{'uncertainty of':<22}{'Spearman':>10}{'miscal. area':>14}{'NLL':>10}"]
    for quantity, scores in report.items():
        cells = [f"{scores[name]:>{width}.3f}" if name in scores else f"{'–':>{width}}"
                 for name, width in (("spearman", 10), ("miscalibration_area", 14),
                                     ("nll", 10))]
        lines.append(f"{quantity:<22}{''.join(cells)}")
    return "\n".join(lines)
