"""One update phase as one compiled program, with a fallback to eager execution.

An imwm update on a small model is bound by per-op overhead, not arithmetic: the laptop
preset's update dispatches thousands of ATen ops for a few MFLOPs, and on a GPU each op is at
least one kernel launch. ``torch.compile`` (TorchDynamo + Inductor) traces a whole phase —
the world model's encode / observe loop / heads / losses, or the imagination loop with the
actor, critic and replay-value losses — into one graph (``fullgraph=True``: a graph break is an
error here, not a silent split), and AOTAutograd compiles its backward as a second program.
The recurrent loops are unrolled at trace time (their lengths are static per batch shape). A
``torch._higher_order_ops.scan`` would compile one step instead of ``T``, but under Inductor with
autograd torch 2.13 refuses a recurrence whose carry comes out of ``tanh`` / ``sigmoid`` (a GRU's)
with "scan might be aliasing the input or the output!" (pytorch/pytorch#195977; measured on a
``GRUCell`` loop here), so the unrolled loop is the one that compiles.

Modes (``agent.compile``):

- ``false`` (or ``False``): eager PyTorch.
- ``default``: Inductor with its default settings (CPU: C++/OpenMP kernels; GPU: Triton).
- ``max-autotune``: Inductor benchmarks GEMM and kernel configurations at compile time.
- ``reduce-overhead``: on CUDA, replays the compiled program as a CUDA graph (one launch);
  on CPU it behaves as ``default``.

Scopes (``agent.compile_scope``):

- ``phase``: each phase above is one program; the recurrent loops are unrolled into it. Fewest
  kernels per update, but the cold compile grows with the loop lengths: at the 1M-parameter
  size with 16x64 batches it outlasted 340 s on a 16-core GPU machine (RESULTS.md).
- ``step``: the loops' bodies are compiled (:class:`CompiledSteps`): one observe step of the
  dynamics (``observe_cell``), one imagination step (``img_step``) and the actor's forward, each
  traced once and called ``T`` or ``H`` times; and, whole, the pieces without a recurrent loop:
  the encoder over all ``B x T`` frames, the world model's heads and losses after its observe
  loop (``WorldModelLoss.heads_and_losses``) and the behaviour losses. Loop glue, backward
  bookkeeping and the optimisers run eagerly. The compile cost no longer depends on the
  sequence length (PyTorch's "regional compilation").
- ``observe_step``: between the two. The world model as in ``step`` (the observe loop, whose
  length is the replay's ``batch_length``, compiled per step; encoder, heads and losses whole),
  and imagination with the behaviour losses as one program, as in ``phase``: its loop is
  ``horizon + 1`` steps (16 in DreamerV3), so its compile cost is bounded.

Compilation happens at the first call of each program; its wall time is recorded in
:attr:`CompiledPhase.compile_seconds`. Inductor caches compiled graphs on disk
(``TORCHINDUCTOR_CACHE_DIR``, by default under the system temp dir), so a second process with
the same shapes and code compiles in seconds. If compiling or running the compiled program
raises, one warning names the phase and the error and the phase runs eagerly from then on.

Example:
    >>> import torch
    >>> phase = CompiledPhase(lambda x: (x * 2).sum(), name="double", mode="false")
    >>> phase(torch.ones(3)).item(), phase.compiled
    (6.0, False)
    >>> parse_compile_mode(True), parse_compile_mode("reduce-overhead")
    ('default', 'reduce-overhead')
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["COMPILE_MODES", "COMPILE_SCOPES", "SCOPE_PHASES", "SCOPE_STEPS", "CompiledPhase", "CompiledSteps",
           "check_compile_with_boundary_grad", "parse_compile_mode"]

#: accepted values of ``agent.compile``
COMPILE_MODES = ("false", "default", "max-autotune", "reduce-overhead")
#: per scope, the agent's phases compiled whole (imagination and behaviour: ``imagine_and_behaviour``,
#: or ``imagine_forward`` and ``behaviour_forward`` when an intrinsic reward runs between them)
SCOPE_PHASES = {
    "phase": ("world_model_forward", "imagine_forward", "behaviour_forward", "imagine_and_behaviour"),
    "step": ("behaviour_forward",),
    "observe_step": ("imagine_forward", "behaviour_forward", "imagine_and_behaviour"),
}
#: per scope, the pieces compiled on their own (:class:`CompiledSteps`); the loop bodies among them
#: are called once per step
SCOPE_STEPS = {
    "phase": (),
    "step": ("encoder", "observe_cell", "heads_and_losses", "img_step", "actor"),
    "observe_step": ("encoder", "observe_cell", "heads_and_losses"),
}
#: accepted values of ``agent.compile_scope``
COMPILE_SCOPES = tuple(SCOPE_PHASES)


def parse_compile_mode(value: Any) -> str:
    """``agent.compile`` as one of :data:`COMPILE_MODES` (``True`` means ``"default"``).

    Example:
        >>> parse_compile_mode(True), parse_compile_mode("true"), parse_compile_mode(None)
        ('default', 'default', 'false')
        >>> parse_compile_mode("Max-Autotune")
        'max-autotune'
        >>> parse_compile_mode("fast")
        Traceback (most recent call last):
        ...
        ValueError: compile must be one of ['false', 'default', 'max-autotune', 'reduce-overhead'] (or true/false), got 'fast'
    """
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return "default"
    if value is False or value is None:
        return "false"
    if isinstance(value, str) and value.lower() in COMPILE_MODES:
        return value.lower()
    raise ValueError(f"compile must be one of {list(COMPILE_MODES)} (or true/false), got {value!r}")


def check_compile_with_boundary_grad(compile_mode: str, boundary_grad: str | None) -> None:
    """``ValueError`` naming ``compile`` unless it is ``"false"`` when the dynamics' ``boundary_grad`` is local.

    The local boundary gradient's forced passes fork the RNG, which one compiled graph cannot hold.

    Example:
        >>> check_compile_with_boundary_grad("default", "straight_through")  # passes: returns None
        >>> check_compile_with_boundary_grad("default", "local")
        Traceback (most recent call last):
        ...
        ValueError: compile must be false with dynamics.boundary_grad=local (the update runs eagerly), got 'default'
    """
    if compile_mode != "false" and boundary_grad == "local":
        raise ValueError(
            f"compile must be false with dynamics.boundary_grad=local (the update runs eagerly), got {compile_mode!r}"
        )


class CompiledPhase:
    """A function run through ``torch.compile(fullgraph=True)``, or eagerly.

    Args:
        fn: the phase, a function of tensors / TensorDicts (bound methods are fine).
        name: used in the fallback warning.
        mode: one of :data:`COMPILE_MODES`.

    Attributes:
        compiled: the compiled program is in use (False after a fallback).
        compile_seconds: wall time of the first compiled call (trace + compile + one run), or
            None before it.
    """

    def __init__(self, fn: Callable, *, name: str, mode: str = "false") -> None:
        self.fn = fn
        self.name = name
        self.mode = parse_compile_mode(mode)
        self.compile_seconds: float | None = None
        self._program: Callable | None = None
        if self.mode != "false":
            options = {} if self.mode == "default" else {"mode": self.mode}
            try:
                self._program = torch.compile(fn, fullgraph=True, dynamic=False, **options)
            except Exception as err:  # compilation is an optimisation, never a requirement
                self._fall_back(err)

    @property
    def compiled(self) -> bool:
        return self._program is not None

    def _fall_back(self, err: BaseException) -> None:
        warnings.warn(f"torch.compile of the {self.name} phase failed ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); running it eagerly", stacklevel=3)
        self._program = None

    def __call__(self, *args, **kwargs):
        if self._program is None:
            return self.fn(*args, **kwargs)
        first = self.compile_seconds is None
        start = time.perf_counter()
        try:
            out = self._program(*args, **kwargs)
        except Exception as err:
            # compiled code raised: retry the same inputs eagerly, so a genuine error in the
            # phase (a bad key, a shape) surfaces with its own eager message
            self._fall_back(err)
            return self.fn(*args, **kwargs)
        if first:
            self.compile_seconds = time.perf_counter() - start
        return out


class CompiledSteps:
    """Compiled programs for named methods, installed on their objects for a ``with`` block.

    ``agent.compile_scope=step`` compiles the bodies of the update's recurrent loops, not the
    whole phases. The programs replace the methods only inside :meth:`installed` (as instance
    attributes, removed on exit), so outside an update the objects are the plain modules: they
    pickle, deep-copy and act eagerly as before. A method whose compilation fails warns once and
    runs eagerly (:class:`CompiledPhase`).

    Args:
        targets: ``(object, method name)`` pairs; a pair whose object lacks the method is skipped.
        mode: one of :data:`COMPILE_MODES`.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 2)
        >>> steps = CompiledSteps([(lin, "forward")], mode="false")
        >>> with steps.installed():
        ...     "forward" in vars(lin)
        True
        >>> "forward" in vars(lin), sorted(steps.programs)
        (False, ['Linear.forward'])
    """

    def __init__(self, targets: list[tuple[object, str]], *, mode: str) -> None:
        self._targets = [(obj, name) for obj, name in targets if callable(getattr(obj, name, None))]
        self.programs: dict[str, CompiledPhase] = {}
        for obj, name in self._targets:
            label = f"{type(obj).__name__}.{name}"
            self.programs[label] = CompiledPhase(getattr(obj, name), name=label, mode=mode)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        for (obj, name), program in zip(self._targets, self.programs.values()):
            obj.__dict__[name] = program
        try:
            yield
        finally:
            for obj, name in self._targets:
                obj.__dict__.pop(name, None)
