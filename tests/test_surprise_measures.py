"""Measures of a VTA model's all-COPY surprise: the KL's two parts on hand-computed values, the
measures on a tiny model (``kl`` is exactly what the detector reads), and their AUC and ceiling."""

import math

import numpy as np
import pytest
import torch

from imwm.analysis.surprise_measures import MEASURES, latent_measures, measure_rows, surprise_measures
from imwm.vta.layers import gaussian_kl
from tests.test_vta_read_placement import _data, _model


def test_kl_splits_into_shift_and_spread_by_hand():
    one = torch.ones(1, 1, 2)
    # shift 0.5 * (2^2 + 0) / 1 = 2; spread per dim r = 4: 0.5 * (4 - 1 - log 4) twice
    latents = {"post_mean": torch.tensor([[[2.0, 0.0]]]), "post_std": 2 * one, "prior_mean": 0 * one,
               "prior_std": one}
    m = latent_measures(latents)
    spread = 4 - 1 - math.log(4)
    assert m["shift"].item() == pytest.approx(math.log1p(2.0))
    assert m["spread"].item() == pytest.approx(math.log1p(spread))
    assert m["kl"].item() == pytest.approx(math.log1p(2.0 + spread))
    assert m["distance"].item() == pytest.approx(math.log1p(4.0))
    assert torch.expm1(m["kl"]).item() == pytest.approx(gaussian_kl(*latents.values()).item())


def test_measures_on_a_tiny_model_and_kl_is_the_detector_input():
    model, data = _model(), _data()
    measures = surprise_measures(model, data, batch_size=4)
    assert list(measures) == list(MEASURES) and all(v.shape == (6, 12) for v in measures.values())
    assert all(np.isfinite(v).all() and (v >= 0).all() for v in measures.values())
    detector_input = model.dynamics.copy_surprise(*model.inputs(data["observation"])[1:])[..., 0].numpy()
    np.testing.assert_allclose(measures["kl"], detector_input, rtol=1e-5, atol=1e-6)
    # the decoded posterior latent is what forward() reconstructs when no READ follows frame 0
    x, embed, action, is_first = model.inputs(data["observation"][:2])
    latents = model.dynamics.copy_latents(embed, action, is_first)
    assert latents["context"].shape[-1] + latents["post_mean"].shape[-1] == model.dynamics.feat_dim
    assert model.decode(torch.cat([latents["context"], latents["post_mean"]], -1)).shape == x.shape


def test_measure_rows_give_auc_and_ceiling_per_measure():
    true = np.zeros((4, 10), bool)
    true[:, [0, 5]] = True
    exact = true.astype(float)        # peaks at the change: AUC 1, ceiling F1 1
    blind = np.ones((4, 10))          # constant: AUC 0.5
    rows = measure_rows({"exact": exact, "blind": blind}, true, gaps=[2], draws=5)
    assert [r["measure"] for r in rows] == ["exact", "blind"]
    assert rows[0]["auc"] == 1.0 and rows[0]["ceiling"][0]["f1"] == 1.0
    assert rows[1]["auc"] == 0.5
