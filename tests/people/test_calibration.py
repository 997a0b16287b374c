"""The grouping threshold is read off labelled faces: the best BCubed F of a curve that falls on both sides."""

from __future__ import annotations

import doctest

import numpy as np

from cmce.people import calibration
from cmce.people.calibration import calibrate_threshold, threshold_curve


def _people(n_people: int = 30, per: int = 4, dim: int = 16, noise: float = 0.6, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(n_people), per)
    x = rng.normal(size=(n_people, dim))[truth] + noise * rng.normal(size=(len(truth), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def test_too_low_a_threshold_chains_everyone_and_too_high_splits_everyone():
    x, truth = _people()
    curve = threshold_curve(x, truth, method="components", thresholds=[-0.5, 0.3, 0.5, 0.7, 0.99])
    assert curve[0].people == 1 and curve[-1].people == len(truth)
    best = calibrate_threshold(x, truth, method="components", thresholds=[-0.5, 0.3, 0.5, 0.7, 0.99])
    assert curve[0].f < best.best.f and curve[-1].f < best.best.f
    assert best.to_dict()["threshold"] == best.threshold and best.identities == 30


def test_hdbscan_is_one_point():
    x, truth = _people()
    assert len(threshold_curve(x, truth, method="hdbscan", thresholds=[0.3, 0.5])) == 1


def test_docstring_examples():
    assert doctest.testmod(calibration).failed == 0
