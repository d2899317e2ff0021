"""Weight gradients of a recurrent loop, computed once per sequence instead of once per step.

In a loop ``y_t = x_t @ W`` over T steps, autograd computes ``dW += x_t^T g_t`` at every step:
T skinny matmuls (inner size = batch, e.g. 16) that each write a full weight-sized result and
then add it into ``W.grad``. On a CPU that memory traffic, not the arithmetic, dominated the
RSSM's backward pass. Here the loop multiplies by a *detached* ``W``; each step's backward only
returns ``g_t @ W^T`` (needed to continue through time) and files ``g_t`` away; a node placed
*before* the loop (on the initial state) runs after every step's backward, by construction of
the graph, and computes ``dW = X^T G`` with one GEMM over all ``[T*B]`` rows.

Limits: first-order gradients only (no double backward); with ``retain_graph=True`` a second
backward works because each step's gradient is stored by step index and cleared once used.
"""

from __future__ import annotations

import torch


class _Store:
    __slots__ = ("inputs", "grads")

    def __init__(self):
        self.inputs: list[torch.Tensor] = []
        self.grads: dict[int, torch.Tensor] = {}


class _StepMatmul(torch.autograd.Function):
    """``x @ weight`` whose backward returns only ``d x`` and records ``d y`` for the sink."""

    @staticmethod
    def forward(ctx, x, weight, store):
        ctx.save_for_backward(weight)
        ctx.store = store
        ctx.index = len(store.inputs)
        store.inputs.append(x.detach())  # values only: keeping x would cycle ctx -> store -> x
        return x @ weight

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        ctx.store.grads[ctx.index] = grad
        return grad @ weight.t(), None, None


class _Sink(torch.autograd.Function):
    """Identity on the loop's initial tensors; its backward emits the weights' gradients."""

    @staticmethod
    def forward(ctx, stores, n_anchor, *tensors):
        ctx.stores = stores
        ctx.n_anchor = n_anchor
        return tuple(t.clone() for t in tensors[:n_anchor])

    @staticmethod
    def backward(ctx, *anchor_grads):
        weight_grads = []
        needs = ctx.needs_input_grad[2 + ctx.n_anchor :]
        for store, need in zip(ctx.stores, needs):
            steps = sorted(store.grads)
            if not steps or not need:
                store.grads.clear()
                weight_grads.append(None)
                continue
            x = torch.cat([store.inputs[i] for i in steps])
            g = torch.cat([store.grads[i] for i in steps])
            weight_grads.append(x.t() @ g)
            store.grads.clear()
        return (None, None, *anchor_grads, *weight_grads)


class DeferredMatmuls:
    """Matmuls by fixed weights inside a time loop, with batched weight gradients.

    Args:
        weights: ``name -> [K, N]`` tensors (may carry a graph to parameters).
        enabled: use the deferred path (else plain matmuls); typically
            ``torch.is_grad_enabled()`` and any weight requires grad.

    Usage::

        mats = DeferredMatmuls({"w": W}, enabled=torch.is_grad_enabled())
        h = mats.anchor(h0)[0]        # before the loop: the gradient sink
        for t in range(T):
            h = torch.tanh(mats.mm("w", h) + x[t])

    Every tensor that enters ``mm`` inside the loop must depend on an anchored tensor (else
    the sink may run before that step's backward and miss its gradient).
    """

    def __init__(self, weights: dict[str, torch.Tensor], *, enabled: bool):
        device = next(iter(weights.values())).device.type
        if torch.is_autocast_enabled(device):
            # cast once per sequence: autocast caches casts of leaf parameters only, and these
            # re-arranged weights would be cast again at every step of the loop
            dtype = torch.get_autocast_dtype(device)
            weights = {k: w.to(dtype) for k, w in weights.items()}
        self.enabled = enabled
        self.names = list(weights)
        self.weights = weights
        self.detached = {k: w.detach() for k, w in weights.items()}
        self.stores = {k: _Store() for k in self.names}

    def anchor(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Pass the loop's initial tensors through the gradient sink (identity forward)."""
        if not self.enabled:
            return tensors
        return _Sink.apply(
            [self.stores[k] for k in self.names],
            len(tensors),
            *tensors,
            *[self.weights[k] for k in self.names],
        )

    def mm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``x @ weights[name]`` (2-D ``x``)."""
        if not self.enabled:
            return x @ self.weights[name]
        return _StepMatmul.apply(x, self.detached[name], self.stores[name])
