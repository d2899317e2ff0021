"""The guarded optimiser step: both groups step or neither does, the guard counts and raises, and
the optimiser factory names the config key in its errors."""
import pytest
import torch

from imwm.agent.optimization import NonFiniteGuard, NonFiniteUpdateError, guarded_step, make_optimizer
from imwm.nn.optim import LaProp


def _groups(kind="laprop"):
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    opt_a = make_optimizer(kind, a.parameters(), lr=0.1, eps=1e-8, name="actor", warmup=0)
    opt_b = make_optimizer(kind, b.parameters(), lr=0.1, eps=1e-8, name="critic", warmup=0)
    return a, b, [(list(a.parameters()), opt_a, 1.0), (list(b.parameters()), opt_b, float("inf"))]


def test_both_groups_step_and_norms_are_measured_before_clipping():
    a, b, groups = _groups()
    before = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    x = torch.randn(4, 3)
    terms = {"loss_a": a(x).pow(2).sum() * 100, "loss_b": b(a(x).detach()).pow(2).sum()}
    norms, skipped = guarded_step(terms, groups, guard=NonFiniteGuard(2), phase="behaviour", update=0)
    assert skipped is None and len(norms) == 2 and norms[0] > 1.0  # clipped to 1, reported unclipped
    assert all(not torch.equal(p, q) for p, q in zip(before, (*a.parameters(), *b.parameters())))
    assert torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in a.parameters()])) == pytest.approx(1.0)


def test_a_nonfinite_term_skips_every_group_and_leaves_optimiser_state_untouched():
    a, b, groups = _groups()
    guard = NonFiniteGuard(2)
    x = torch.randn(4, 3)
    guarded_step({"loss_a": a(x).sum(), "loss_b": b(a(x)).sum()}, groups, guard=guard, phase="behaviour", update=0)
    states = [{k: v.clone() for k, v in opt.state[p].items()} for _, opt, _ in groups for p in opt.param_groups[0]["params"]]
    params = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]

    def bad():
        return {"loss_a": a(x).sum(), "loss_b": b(a(x)).sum() * float("nan")}

    with pytest.warns(UserWarning, match=r"update 1: non-finite behaviour loss_b=nan; update skipped"):
        norms, skipped = guarded_step(bad(), groups, guard=guard, phase="behaviour", update=1)
    assert skipped == {"nonfinite_skipped": torch.ones(())} and guard.streak == 1 and guard.total == 1
    assert all(torch.equal(p, q) for p, q in zip(params, (*a.parameters(), *b.parameters())))
    after = [opt.state[p] for _, opt, _ in groups for p in opt.param_groups[0]["params"]]
    assert all(torch.equal(s[k], t[k]) for s, t in zip(states, after) for k in s)
    assert all(p.grad is None for p in (*a.parameters(), *b.parameters()))
    with pytest.raises(NonFiniteUpdateError, match=r"update 2: non-finite behaviour loss_b=nan; 2 non-finite "
                                                   r"updates in a row \(agent.max_nonfinite_updates=2\)"):
        guarded_step(bad(), groups, guard=guard, phase="behaviour", update=2)


def test_a_nonfinite_gradient_alone_is_named_by_its_norm():
    w = torch.nn.Parameter(torch.ones(2))
    opt = make_optimizer("adam", [w], lr=0.1, eps=1e-8, name="model")
    loss = {"loss_root": torch.sqrt(w - 1).sum()}  # finite value 0, infinite gradient at 0
    with pytest.warns(UserWarning, match=r"non-finite world model gradient norm=inf"):
        _, skipped = guarded_step(loss, [([w], opt, float("inf"))], guard=NonFiniteGuard(5), phase="world model",
                                  update=3)
    assert skipped is not None and torch.equal(w.detach(), torch.ones(2))


def test_guard_passed_ends_the_streak_not_the_total():
    guard = NonFiniteGuard(3)
    guard.streak, guard.total = 2, 4
    guard.passed()
    assert (guard.streak, guard.total) == (0, 4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="sgd"), "optimizer must be one of"),
    (dict(lr=0.0), "critic_lr must be a finite number > 0, got 0.0"),
    (dict(eps=float("nan")), "critic_eps must be a finite number > 0"),
])
def test_make_optimizer_names_the_key(kwargs, message):
    args = dict(kind="adam", lr=1e-3, eps=1e-8) | kwargs
    with pytest.raises(ValueError, match=message):
        make_optimizer(args.pop("kind"), [torch.nn.Parameter(torch.ones(1))], name="critic", **args)
    with pytest.raises(ValueError, match="max_nonfinite_updates must be an integer >= 1"):
        NonFiniteGuard(0)


@pytest.mark.parametrize("lr", [None, "1e-4"])
def test_make_optimizer_names_the_key_of_a_non_number(lr):
    with pytest.raises(ValueError) as info:
        make_optimizer("adam", [torch.nn.Parameter(torch.ones(1))], lr=lr, eps=1e-8, name="critic")
    assert str(info.value) == f"critic_lr must be a finite number > 0, got {lr!r}"


def test_make_optimizer_kinds():
    w = [torch.nn.Parameter(torch.ones(1))]
    assert isinstance(make_optimizer("laprop", w, lr=1e-3, eps=1e-20, name="model", agc=0.3, warmup=10), LaProp)
    assert isinstance(make_optimizer("adam", w, lr=1e-3, eps=1e-8, name="model"), torch.optim.Adam)
