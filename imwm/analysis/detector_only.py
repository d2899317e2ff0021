"""Train a fresh boundary detector inside a frozen, trained VTA model: can this detector learn here?

In full training the posterior boundary detector learns beside an encoder and decoder that are
still changing, and for thousands of updates a READ at a true change is worth no more than one
elsewhere. Whether a detector *design* (its normalisation, its inputs, causal or centred) can
learn the changes from the signal the model gives it is easier to answer once that signal exists:
take a model whose objective already pays for READs at changes (``local_read_effect`` says so),
freeze every weight, put a freshly initialised detector with the options under test in place of
its own, and train only that detector by the model's usual loss. The detector then learns from
exactly what it learns from in full training (the local or straight-through gradient, and the
rate prior's KL), on a world model that holds still.

What changes against full training: no weight outside the detector moves, batch-norm running
statistics outside the detector stay as they were (training-mode passes normalise with the
batch's statistics, as in training, without updating them), and the batches come from
the training stream far past where the run stopped (``batch_offset``), so the detector sees data
the run never trained on.

Works with both variants: :class:`imwm.vta.VTAOriginal` (``model.post_boundary``) and
:class:`imwm.vta.VTASequenceModel` (``model.dynamics.post_boundary``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch
from torch import nn

from imwm.vta.layers import DETECTOR_NORMS, PostBoundaryDetector

__all__ = ["boundary_detector", "fresh_detector", "train_detector_only"]


def _owner(model: nn.Module) -> nn.Module:
    """The module that holds the detector: the dreamer variant's dynamics, or the original model."""
    return model.dynamics if hasattr(model, "dynamics") else model


def boundary_detector(model: nn.Module) -> PostBoundaryDetector:
    """The posterior boundary detector of either VTA variant.

    Example:
        >>> from imwm.vta import VTAOriginal
        >>> m = VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8)
        >>> boundary_detector(m) is m.post_boundary
        True
    """
    detector = getattr(_owner(model), "post_boundary", None)
    if not isinstance(detector, PostBoundaryDetector):
        raise ValueError(f"{type(model).__name__} has no posterior boundary detector (post_boundary)")
    return detector


def fresh_detector(model: nn.Module, *, norm: str, diff: bool, causal: bool, seed: int) -> PostBoundaryDetector:
    """Replace the model's detector by a freshly initialised one of the same size; returns it.

    Args:
        model: a VTA model (either variant).
        norm: ``"layer"`` or ``"batch"``, the new detector's normalisation.
        diff: whether it also reads ``embed_t - embed_{t-1}``.
        causal: whether step ``t`` sees ``embed[.. t]`` only.
        seed: seeds the new detector's initial weights.

    Example:
        >>> from imwm.vta import VTAOriginal
        >>> m = VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8)
        >>> det = fresh_detector(m, norm="layer", diff=True, causal=True, seed=0)
        >>> (det is m.post_boundary, det.diff, det.causal, det.in_dim)
        (True, True, True, 8)
    """
    if norm not in DETECTOR_NORMS:
        raise ValueError(f"norm must be one of {list(DETECTOR_NORMS)}, got {norm!r}")
    old = boundary_detector(model)
    torch.manual_seed(seed)
    new = PostBoundaryDetector(old.in_dim, hidden_dim=old.hidden_dim, num_layers=old.num_layers,
                               flavour=old.flavour, diff=diff, causal=causal, norm=norm)
    _owner(model).post_boundary = new
    return new


def _freeze_all_but(model: nn.Module, detector: nn.Module) -> None:
    own = {id(m) for m in detector.modules()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in detector.parameters():
        p.requires_grad_(True)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in own:
            m.track_running_stats = False  # training passes use the batch's, eval the trained model's


def _ranking(model: nn.Module, obs: torch.Tensor, true) -> dict[str, float]:
    """AUC of q(READ) for the true changes, the spread of its log-odds, and its mean (eval mode)."""
    from imwm.analysis.metrics import roc_auc
    from imwm.training.vta_run import predict_boundaries, read_logodds_std

    q = predict_boundaries(model, {"observation": obs})["read_prob"][:, 1:]
    return {"auc": float(roc_auc(q.numpy().ravel(), true.ravel())), "spread": read_logodds_std(q),
            "mean_q": float(q.mean())}


def train_detector_only(
    model: nn.Module, batches: Callable[[int], torch.Tensor], heldout: Mapping, *, norm: str = "batch",
    diff: bool = True, causal: bool = True, updates: int = 500, lr: float = 1e-3, seed: int = 0,
    eval_every: int = 100, eval_sequences: int = 64, batch_offset: int = 100_000,
    say: Callable[[str], None] = lambda line: None,
) -> list[dict]:
    """Freeze ``model``, give it a fresh detector, train only that detector; the held-out curve.

    Args:
        model: a trained VTA model (either variant), modified in place.
        batches: update index -> a training batch of observations ``[B, T, C, H, W]``
            (``BoundaryDataStream(cfg["data"]).batch(i)["observation"]``).
        heldout: ``observation`` ``[N, T, C, H, W]`` and ``true_boundary`` ``[N, T, 1]``; the first
            ``eval_sequences`` are scored.
        norm, diff, causal: the new detector's options (:class:`PostBoundaryDetector`).
        updates: Adam steps on the detector alone, learning rate ``lr``.
        seed: seeds the detector's initial weights, then the model's sampling.
        eval_every: score the held-out sequences every so many updates (and at 0 and the end).
        batch_offset: the first batch index drawn, past the run's own batches.
        say: called with one line per evaluation.

    Returns:
        One record per evaluation: ``update``, ``auc`` (ROC AUC of q(READ) for the true changes),
        ``spread`` (standard deviation of q(READ)'s log-odds over steps), ``mean_q``, ``cpu_s``.

    Example:
        >>> from imwm.vta import VTAOriginal
        >>> m = VTAOriginal(image_size=16, cnn_depth=4, embed_dim=8, belief_dim=8, state_dim=2, hidden_dim=8)
        >>> obs = torch.randint(0, 255, (4, 6, 3, 16, 16), dtype=torch.uint8)
        >>> truth = torch.zeros(4, 6, 1); truth[:, 3] = 1
        >>> curve = train_detector_only(m, lambda i: obs, {"observation": obs, "true_boundary": truth},
        ...                             updates=2, eval_every=1, seed=0)
        >>> [r["update"] for r in curve], 0.0 <= curve[-1]["auc"] <= 1.0
        ([0, 1, 2], True)
    """
    if updates < 0 or eval_every < 1:
        raise ValueError(f"updates must be >= 0 and eval_every >= 1, got {updates!r} and {eval_every!r}")
    detector = fresh_detector(model, norm=norm, diff=diff, causal=causal, seed=seed)
    _freeze_all_but(model, detector)
    opt = torch.optim.Adam(detector.parameters(), lr=lr)
    obs, true = heldout["observation"][:eval_sequences], heldout["true_boundary"][:eval_sequences, 1:, 0].numpy()
    cpu0, curve = time.process_time(), []
    model.train()
    for update in range(updates + 1):
        if update % eval_every == 0 or update == updates:
            curve.append({"update": update, **_ranking(model, obs, true), "cpu_s": time.process_time() - cpu0})
            say("update {update}: AUC {auc:.3f}, spread {spread:.3f}, mean q(READ) {mean_q:.3f}".format(**curve[-1]))
        if update == updates:
            break
        loss = model(batches(batch_offset + update))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return curve
