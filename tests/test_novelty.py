"""The novelty score: fitted on training embeddings, thresholded on val, high for what is unlike both."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_images_like_the_training_set_are_familiar_and_others_are_not(method, seed):
    from deepfake_detector.core.params import load_params
    from deepfake_detector.model.novelty import fit_novelty, novelty_scores

    p = load_params(REPO / "params.yaml").novelty.model_copy(update={"method": method, "dims": 16})
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(8, 200))  # the training images live near an 8-dimensional subspace
    like = lambda n: rng.normal(size=(n, 8)) @ basis + 0.1 * rng.normal(size=(n, 200))  # noqa: E731
    nov = fit_novelty(like(600), like(200), p)
    same, other = novelty_scores(like(400), nov), novelty_scores(rng.normal(size=(200, 200)) * 3, nov)
    assert 0.0 <= (same > nov["threshold"]).mean() < 0.12  # ~5 % by construction (val quantile 0.95)
    assert (other > nov["threshold"]).mean() > 0.95  # off the subspace: unfamiliar
