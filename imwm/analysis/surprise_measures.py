"""Which measure of a VTA model's surprise marks the true segment changes best.

``vta.boundary_surprise`` reads ``log(1 + KL(q(s_t) || p(s_t)))`` of a pass that never READs: how
far the observation latent's posterior (the frame seen) is from the running segment's prior (the
frame predicted). For two diagonal Gaussians that KL is a sum of two parts,

    KL = 0.5 * sum_i ((mu_q - mu_p) / sigma_p)^2            (shift: the prediction's mean is off)
       + 0.5 * sum_i (r_i - 1 - log r_i),  r_i = (sigma_q / sigma_p)^2   (spread: the widths differ),

and the second does not depend on what the frame shows where the posterior is simply sharper than
the prior at every step. This module scores the same all-COPY pass
(:meth:`imwm.vta.VTADynamics.copy_latents`) with several measures, so a trained model shows which
one carries the changes:

| measure | per step |
|---|---|
| ``kl`` | ``log(1 + KL)`` (what the detector reads) |
| ``shift`` | ``log(1 + shift part)`` |
| ``spread`` | ``log(1 + spread part)`` |
| ``distance`` | ``log(1 + ||mu_q - mu_p||^2)`` (no prior width) |
| ``pixels`` | ``log(1 + 0.5 ||(dec(mu_q) - dec(mu_p)) / obs_std||^2)``: the two latents decoded, the frames compared |
| ``prior_error`` | ``log(1 + 0.5 ||(x - dec(mu_p)) / obs_std||^2)``: the predicted frame against the frame seen |

For each: the AUC of the score at true changes against every other step (step 0 left out) and the
ceiling of :func:`imwm.analysis.read_placement.ceiling_rows` (READs at each sequence's most
surprising steps, as many as its true changes).

Example:
    >>> mean, std = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    >>> latents = {"post_mean": mean + 1, "post_std": std, "prior_mean": mean, "prior_std": std}
    >>> [round(float(latent_measures(latents)[k][0, 0]), 4) for k in ("kl", "shift", "spread")]  # log(1 + 1.5)
    [0.9163, 0.9163, 0.0]
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from imwm.vta.layers import gaussian_kl_parts

__all__ = ["MEASURES", "latent_measures", "surprise_measures", "measure_rows"]

#: every measure :func:`surprise_measures` returns, in table order
MEASURES = ("kl", "shift", "spread", "distance", "pixels", "prior_error")


def latent_measures(latents: Any) -> dict[str, torch.Tensor]:
    """``kl``, ``shift``, ``spread`` and ``distance`` ``[B, T]`` from a :meth:`~imwm.vta.VTADynamics.copy_latents`
    result (the module docstring gives each formula)."""
    q_mean, q_std, p_mean, p_std = (latents[k] for k in ("post_mean", "post_std", "prior_mean", "prior_std"))
    assert q_mean.shape == p_mean.shape == q_std.shape == p_std.shape, "posterior and prior must have one shape"
    shift, spread = gaussian_kl_parts(q_mean, q_std, p_mean, p_std)
    return {"kl": torch.log1p(shift + spread), "shift": torch.log1p(shift), "spread": torch.log1p(spread),
            "distance": torch.log1p((q_mean - p_mean).pow(2).sum(-1))}


def _frame_cost(a: torch.Tensor, b: torch.Tensor, obs_std: float) -> torch.Tensor:
    """``log(1 + 0.5 ||(a - b) / obs_std||^2)`` per step of two ``[B, T, C, H, W]`` frame stacks."""
    return torch.log1p(0.5 * ((a - b) / obs_std).pow(2).flatten(2).sum(-1))


@torch.no_grad()
def surprise_measures(model: torch.nn.Module, data, *, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Every measure of :data:`MEASURES`, ``[N, T]`` each, for a trained ``VTASequenceModel`` on ``data``
    (a ``[N, T]`` TensorDict with ``observation``)."""
    obs, dynamics = data["observation"], model.dynamics
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {k: [] for k in MEASURES}
    try:
        for i in range(0, len(obs), batch_size):
            x, embed, action, is_first = model.inputs(obs[i : i + batch_size])
            latents = dynamics.copy_latents(embed, action, is_first)
            measures = latent_measures(latents)
            seen = model.decode(torch.cat([latents["context"], latents["post_mean"]], -1))
            predicted = model.decode(torch.cat([latents["context"], latents["prior_mean"]], -1))
            measures.update(pixels=_frame_cost(seen, predicted, model.obs_std),
                            prior_error=_frame_cost(x, predicted, model.obs_std))
            for k in MEASURES:
                parts[k].append(measures[k])
    finally:
        model.train(was_training)
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def measure_rows(measures: dict[str, Any], true: Any, gaps: Iterable[int] = (3,), *, draws: int = 50,
                 seed: int = 0) -> list[dict[str, Any]]:
    """One row per measure: its AUC at the true changes (steps after 0) and its ceiling at each gap."""
    from imwm.analysis._arrays import as_flags
    from imwm.analysis.metrics import roc_auc
    from imwm.analysis.read_placement import ceiling_rows

    flags = as_flags(true, "true", ndim=(2,))
    rows = []
    for name, score in measures.items():
        score = np.asarray(score, dtype=float)
        ceiling = ceiling_rows(score, flags, gaps, draws=draws, seed=seed)
        rows.append({"measure": name, "auc": roc_auc(score[:, 1:].ravel(), flags[:, 1:].ravel()),
                     "ceiling": ceiling})
    return rows
