"""Vectorised k-ary sum trees in torch, and a priority tree with an infinite-priority pool.

TorchRL's ``SumSegmentTreeFp32`` lives in its C++ extension, which does not load with torch 2.13
(importing it fails with an undefined torch symbol), so ``PrioritizedSampler`` cannot even be built here. These trees are plain torch:
every operation works on a whole batch of indices at once, with one tensor op per tree level and no
Python loop over items.

Layout: level 0 holds the leaves, padded to a multiple of ``arity``; level ``i + 1`` holds the sums
of consecutive blocks of ``arity`` entries of level ``i`` (again padded), up to a top level of a
single block. With ``arity = 32`` a tree over 10 million leaves has 5 levels and costs about
``N * (1 + 1/31)`` entries of memory.

- update ``n`` leaves: write them, then for each level recompute the ``n`` parents as the sum of
  their children block (duplicated parents just write the same value twice);
- sample ``n`` prefix sums: start in the top block, at each level take a cumulative sum of the
  ``[n, arity]`` children and descend into the first child whose cumulative sum exceeds the
  query. A query that round-off pushes past the last child falls into the last child with mass.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SumTree", "PriorityTree"]


def _as_index(index, capacity: int, device) -> torch.Tensor:
    index = torch.as_tensor(index, device=device).reshape(-1)
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise TypeError(f"tree indices must be integers, got dtype {index.dtype}")
    index = index.long()
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= capacity:
            bad = lo if lo < 0 else hi
            raise IndexError(f"index {bad} out of range for a tree of capacity {capacity}")
    return index


def _bad_values(value: torch.Tensor, is_bad, limit: int = 3) -> str:
    """A few offending entries of ``value`` for an error message."""
    bad = is_bad(value)
    return f"{int(bad.sum())} bad value(s), e.g. {value[bad][:limit].tolist()}"


class SumTree:
    """A k-ary sum tree over ``capacity`` non-negative finite leaves.

    Args:
        capacity: number of leaves (>= 1); 10 million and more are fine.
        arity: children per node (>= 2). 32 keeps trees shallow, which matters more on CPU than
            the extra additions.
        dtype: leaf and sum dtype; float64 keeps the prefix sums exact enough for priorities that
            span many orders of magnitude (c = 1e4 next to eps**alpha ~ 0.04).
        device: where the tree lives.

    Example:
        >>> tree = SumTree(10)
        >>> tree.update(torch.tensor([2, 7]), torch.tensor([1.0, 3.0]))
        >>> float(tree.total())
        4.0
        >>> tree.find(torch.tensor([0.5, 1.5, 3.9])).tolist()
        [2, 7, 7]
    """

    def __init__(self, capacity: int, *, arity: int = 32, dtype=torch.float64, device="cpu"):
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if int(arity) < 2:
            raise ValueError(f"arity must be >= 2, got {arity}")
        self.capacity = int(capacity)
        self.arity = int(arity)
        self.dtype = dtype
        self.device = torch.device(device)
        self.levels: list[torch.Tensor] = []
        size = self.capacity
        while True:
            blocks = math.ceil(size / self.arity)
            self.levels.append(torch.zeros(blocks * self.arity, dtype=dtype, device=self.device))
            if blocks == 1:
                break
            size = blocks

    # ------------------------------------------------------------------ reading
    @property
    def depth(self) -> int:
        return len(self.levels)

    def total(self) -> torch.Tensor:
        """Sum of all leaves (0-d tensor)."""
        # cumsum, not sum: the same summation order as the descent in find()
        return self.levels[-1].cumsum(0)[-1]

    def __getitem__(self, index) -> torch.Tensor:
        return self.levels[0][_as_index(index, self.capacity, self.device)]

    def leaves(self) -> torch.Tensor:
        """View of the ``capacity`` leaves (do not write into it: use :meth:`update`)."""
        return self.levels[0][: self.capacity]

    # ------------------------------------------------------------------ writing
    def update(self, index, value) -> None:
        """Sets ``leaf[index] = value`` for a batch and refreshes the sums above them.

        ``value`` must be finite and >= 0 (a scalar broadcasts). With duplicated indices one of
        the values wins, and the sums agree with whichever it is.
        """
        index = _as_index(index, self.capacity, self.device)
        value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        value = value.expand(index.shape) if value.numel() == 1 else value.reshape(-1)
        if value.shape != index.shape:
            raise ValueError(
                f"update got {index.numel()} indices but {value.numel()} values"
            )
        if not torch.isfinite(value).all() or (value < 0).any():
            raise ValueError(
                f"SumTree.update: value must be finite and >= 0 (use PriorityTree for inf), got "
                f"{_bad_values(value, lambda v: ~torch.isfinite(v) | (v < 0))}"
            )
        if not index.numel():
            return
        self._write(index, value)

    def _write(self, index: torch.Tensor, value: torch.Tensor) -> None:
        """Unchecked :meth:`update` for callers that validated ``index`` and ``value``."""
        self.levels[0][index] = value
        self._refresh_parents(index)

    def _refresh_parents(self, index: torch.Tensor) -> None:
        k = self.arity
        node = index
        for i, (lower, upper) in enumerate(zip(self.levels[:-1], self.levels[1:])):
            if node.numel() * 4 > upper.numel():
                # a bulk write: re-summing whole levels from here up is cheaper (and gathers no
                # [n, arity] block per written leaf)
                self._rebuild_from(i)
                return
            node = torch.div(node, k, rounding_mode="floor")
            upper[node] = lower.view(-1, k)[node].sum(-1)

    def rebuild(self) -> None:
        """Recomputes every internal sum from the leaves (after a bulk leaf write or a load)."""
        self._rebuild_from(0)

    def _rebuild_from(self, level: int) -> None:
        k = self.arity
        for lower, upper in zip(self.levels[level:-1], self.levels[level + 1:]):
            sums = lower.view(-1, k).sum(-1)
            upper.zero_()
            upper[: sums.numel()] = sums

    def set_leaves(self, values: torch.Tensor) -> None:
        """Replaces all ``capacity`` leaves at once (O(N)), then rebuilds the sums."""
        values = torch.as_tensor(values, dtype=self.dtype, device=self.device).reshape(-1)
        if values.numel() != self.capacity:
            raise ValueError(f"expected {self.capacity} leaves, got {values.numel()}")
        if not torch.isfinite(values).all() or (values < 0).any():
            raise ValueError(
                f"SumTree.set_leaves: values must be finite and >= 0, got "
                f"{_bad_values(values, lambda v: ~torch.isfinite(v) | (v < 0))}"
            )
        self.levels[0].zero_()
        self.levels[0][: self.capacity] = values
        self.rebuild()

    # ------------------------------------------------------------------ sampling
    def find(self, prefix: torch.Tensor) -> torch.Tensor:
        """Leaf index whose cumulative-mass interval contains each query in ``prefix``.

        Queries are clamped into ``[0, total)``; every returned leaf has positive mass as long
        as the total is positive.
        """
        k = self.arity
        u = torch.as_tensor(prefix, dtype=self.dtype, device=self.device).reshape(-1, 1)
        u = u.clamp(min=0)
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        block = torch.zeros(u.shape, dtype=torch.long, device=self.device)
        for level in reversed(self.levels):
            children = level.view(-1, k)[block.squeeze(-1)]           # [n, k]
            csum = children.cumsum(-1)
            # keep u strictly below this block's mass so that round-off cannot run past the
            # last child: the chosen child then always has positive mass
            u = torch.minimum(u, torch.nextafter(csum[:, -1:], zero))
            choice = torch.searchsorted(csum, u, right=True)         # first child with csum > u
            u = u - (csum - children).gather(-1, choice)             # mass left of the child
            block = torch.add(choice, block, alpha=k)
        return block.squeeze(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` leaf indices drawn with replacement, each with probability leaf / total."""
        total = self.total()
        if not total > 0:
            raise RuntimeError("cannot sample from a SumTree whose total mass is 0")
        u = torch.rand(n, generator=generator, dtype=self.dtype, device=self.device) * total
        return self.find(u)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"leaves": self.leaves().clone(), "arity": self.arity}

    def load_state_dict(self, state: dict) -> None:
        if int(state["arity"]) != self.arity:
            raise ValueError(f"state has arity {state['arity']}, this tree {self.arity}")
        self.set_leaves(state["leaves"])

    def clear(self) -> None:
        for level in self.levels:
            level.zero_()


def _distinct_ranks(m: int, k: int, generator, device) -> torch.Tensor:
    """``k`` distinct integers drawn uniformly from ``range(m)`` (``k <= m``), O(k) when k << m."""
    if m <= 4 * k:
        return torch.randperm(m, generator=generator, device=device)[:k]
    picked = torch.randint(m, (2 * k,), generator=generator, device=device).unique()
    while picked.numel() < k:  # rare: only when many of the 2k draws collide
        more = torch.randint(m, (2 * k,), generator=generator, device=device)
        picked = torch.cat([picked, more]).unique()
    # The set of distinct values of i.i.d. uniform draws is exchangeable, so a random k-subset of
    # it is a uniform k-subset of range(m).
    keep = torch.randperm(picked.numel(), generator=generator, device=device)[:k]
    return picked[keep]


def _check_priority(where: str, priority: torch.Tensor) -> None:
    """Priorities are finite >= 0 or +inf; NaN and negative values (-inf included) raise."""
    is_bad = lambda v: torch.isnan(v) | (v < 0)  # noqa: E731
    if bool(is_bad(priority).any()):
        raise ValueError(
            f"{where}: priority must be >= 0 or +inf; got NaN or a negative value "
            f"({_bad_values(priority, is_bad)})"
        )


class PriorityTree:
    """Priorities in ``[0, inf]``: a :class:`SumTree` for the finite ones plus an inf pool.

    Items at ``inf`` (Curious Replay's ``initial: inf``, "not trained on yet") are sampled before
    any finite item: a batch of ``n`` first takes ``min(n, #inf)`` *distinct* inf items uniformly,
    and only the rest of the batch is drawn, with replacement, in proportion to the finite
    priorities. Drawing all ``n`` from a small inf pool with replacement would fill a batch with
    copies of the same few items; drawing them distinct keeps "inf first" and a useful batch.
    The pool is a second sum tree of 0/1 leaves, so a uniform inf item is found in O(log N) too.

    Example:
        >>> tree = PriorityTree(6)
        >>> tree.update(torch.arange(6), torch.tensor([1.0, 2.0, float("inf"), 0.0, 3.0, 0.0]))
        >>> tree.sample(1).tolist()   # the inf item comes first
        [2]
        >>> tree.num_inf, float(tree.finite_total())
        (1, 6.0)
    """

    def __init__(self, capacity: int, *, arity: int = 32, dtype=torch.float64, device="cpu"):
        self.finite = SumTree(capacity, arity=arity, dtype=dtype, device=device)
        self.inf_pool = SumTree(capacity, arity=arity, dtype=torch.float64, device=device)
        self.capacity = self.finite.capacity
        self.device = self.finite.device

    @property
    def num_inf(self) -> int:
        return int(self.inf_pool.total())

    def finite_total(self) -> torch.Tensor:
        return self.finite.total()

    def __getitem__(self, index) -> torch.Tensor:
        index = _as_index(index, self.capacity, self.device)
        value = self.finite.levels[0][index].clone()
        value[self.inf_pool.levels[0][index] > 0] = math.inf
        return value

    def update(self, index, priority) -> None:
        """Sets priorities (finite >= 0, or +inf); NaN and negative values are rejected."""
        index = _as_index(index, self.capacity, self.device)
        priority = torch.as_tensor(priority, dtype=self.finite.dtype, device=self.device)
        priority = priority.expand(index.shape) if priority.numel() == 1 else priority.reshape(-1)
        if priority.shape != index.shape:
            raise ValueError(
                f"update got {index.numel()} indices but {priority.numel()} priorities"
            )
        _check_priority("PriorityTree.update", priority)
        self._write(index, priority)

    def _write(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        """Unchecked :meth:`update`: ``index`` in range, ``priority`` >= 0 or inf, same shape."""
        if not index.numel():
            return
        is_inf = torch.isinf(priority)
        self.finite._write(index, priority.masked_fill(is_inf, 0.0))
        # the pool only changes if an item enters or leaves it: skip its update otherwise
        if bool(is_inf.any() | (self.inf_pool.levels[0][index] > 0).any()):
            self.inf_pool._write(index, is_inf.to(self.inf_pool.dtype))

    def set_all(self, priority: torch.Tensor) -> None:
        """Replaces all ``capacity`` priorities at once (O(N)).

        The same domain as :meth:`update`: finite >= 0, or ``+inf`` (the inf pool). NaN and
        negative values, ``-inf`` included, are refused (``-inf`` is not "infinitely urgent":
        a priority is a non-negative sampling mass), and nothing is written then.
        """
        priority = torch.as_tensor(priority, dtype=self.finite.dtype, device=self.device)
        priority = priority.reshape(-1)
        if priority.numel() != self.capacity:
            raise ValueError(
                f"PriorityTree.set_all: expected {self.capacity} priorities, got {priority.numel()}"
            )
        _check_priority("PriorityTree.set_all", priority)
        is_inf = torch.isposinf(priority)
        self.finite.set_leaves(torch.where(is_inf, torch.zeros_like(priority), priority))
        self.inf_pool.set_leaves(is_inf.to(self.inf_pool.dtype))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` indices: distinct inf items first, the rest in proportion to finite priority."""
        n = int(n)
        parts = []
        inf_total, finite_total = torch.stack([self.inf_pool.total(), self.finite.total()]).tolist()
        num_inf = int(inf_total)
        taken = 0
        if num_inf > 0 and n > 0:
            taken = min(n, num_inf)
            ranks = _distinct_ranks(num_inf, taken, generator, self.device)
            parts.append(self.inf_pool.find(ranks.to(torch.float64) + 0.5))
        rest = n - taken
        if rest > 0:
            if finite_total > 0:
                u = torch.rand(rest, generator=generator, dtype=self.finite.dtype,
                               device=self.device)
                parts.append(self.finite.find(u * finite_total))
            elif num_inf > 0:
                # fewer inf items than the batch and nothing finite: repeat inf items
                parts.append(self.inf_pool.sample(rest, generator))
            else:
                raise RuntimeError("no item has a positive priority: nothing can be sampled")
        if not parts:
            return torch.zeros(0, dtype=torch.long, device=self.device)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict:
        return {"finite": self.finite.state_dict(), "inf_pool": self.inf_pool.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.finite.load_state_dict(state["finite"])
        self.inf_pool.load_state_dict(state["inf_pool"])

    def clear(self) -> None:
        self.finite.clear()
        self.inf_pool.clear()
