import pytest
import torch

from imwm.objectives.returns import ReturnNormalizer, finite_quantiles, imagined_weight, lambda_return


def _col(*xs):
    return torch.tensor(xs, dtype=torch.float32).reshape(1, -1, 1)


def test_lambda_return_hand_computed_with_terminal():
    # states 0..3; state 2 is terminal (continue 0), gamma 0.9, lambda 0.5
    reward = _col(0.0, 1.0, 2.0, 3.0)
    value = _col(10.0, 20.0, 30.0, 40.0)
    cont = _col(1.0, 1.0, 0.0, 1.0)
    ret = lambda_return(reward, value, cont, gamma=0.9, lmbda=0.5)
    # R3 = 40; R2 = 3 + .9*(.5*40 + .5*40) = 39; R1 = 2 + .9*0*(...) = 2; R0 = 1 + .9*(.5*20 + .5*2) = 10.9
    assert ret.shape == (1, 3, 1)
    torch.testing.assert_close(ret.flatten(), torch.tensor([10.9, 2.0, 39.0]))


def test_lambda_return_special_cases_batched():
    torch.manual_seed(0)
    reward, value = torch.randn(4, 6, 1), torch.randn(4, 6, 1)
    cont = torch.rand(4, 6, 1)
    # lambda = 0: one-step TD targets r_{t+1} + gamma c_{t+1} v_{t+1}
    td0 = lambda_return(reward, value, cont, gamma=0.8, lmbda=0.0)
    torch.testing.assert_close(td0, reward[:, 1:] + 0.8 * cont[:, 1:] * value[:, 1:])
    # lambda = 1: discounted Monte-Carlo sum bootstrapped from v_H
    mc = lambda_return(reward, value, cont, gamma=0.8, lmbda=1.0)
    expect = value[:, -1]
    for t in range(4, -1, -1):
        expect = reward[:, t + 1] + 0.8 * cont[:, t + 1] * expect
        torch.testing.assert_close(mc[:, t], expect)


def test_imagined_weight():
    cont = _col(1.0, 1.0, 0.0, 1.0)
    w = imagined_weight(cont, gamma=0.9)
    torch.testing.assert_close(w.flatten(), torch.tensor([1.0, 0.9, 0.0, 0.0]))
    # a terminal start state weighs nothing
    w0 = imagined_weight(_col(0.0, 1.0, 1.0), gamma=0.9)
    assert torch.all(w0 == 0)
    assert not imagined_weight(cont.requires_grad_(), gamma=0.9).requires_grad


def test_lambda_return_bad_input():
    x = torch.zeros(2, 4, 1)
    with pytest.raises(ValueError, match="value"):
        lambda_return(x, torch.zeros(2, 3, 1), x, gamma=0.9, lmbda=0.9)
    with pytest.raises(ValueError, match="gamma"):
        lambda_return(x, x, x, gamma=1.5, lmbda=0.9)
    with pytest.raises(ValueError, match="reward"):
        lambda_return(torch.zeros(2, 4), x, x, gamma=0.9, lmbda=0.9)


def test_return_normalizer_ema_known_values():
    norm = ReturnNormalizer(decay=0.99)
    returns = torch.linspace(0.0, 100.0, 101).reshape(-1, 1)  # P5 = 5, P95 = 95
    assert norm.scale().item() == 1.0  # floor before any data
    norm.update(returns)
    torch.testing.assert_close(norm.low, torch.tensor([0.05]))
    torch.testing.assert_close(norm.high, torch.tensor([0.95]))
    assert norm.scale().item() == 1.0  # range 0.9 < 1: not amplified
    norm.update(returns)
    # low = .99*.05 + .01*5, high = .99*.95 + .01*95 -> range 1.791
    torch.testing.assert_close(norm.scale(), torch.tensor(1.8905 - 0.0995))
    assert norm.scale().shape == ()
    assert set(norm.state_dict()) >= {"low", "high"}


def test_return_normalizer_bad_input():
    with pytest.raises(ValueError, match="decay"):
        ReturnNormalizer(decay=1.0)
    with pytest.raises(ValueError, match="perc_low"):
        ReturnNormalizer(perc_low=96.0)


def test_finite_quantiles_match_nanquantile_on_the_finite_entries():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(257, 4, generator=g) * 10
    x[torch.rand(257, 4, generator=g) < 0.2] = float("nan")
    x[:5, 1], x[5:9, 2] = float("inf"), -float("inf")
    x[:, 3] = float("nan")  # no finite entry at all
    x[:256, 0] = float("nan")  # a single finite entry
    q = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0])
    want = torch.nanquantile(torch.where(torch.isfinite(x), x, torch.nan), q, dim=0)
    got = finite_quantiles(x, q)
    assert got.shape == (5, 4)
    torch.testing.assert_close(got, want, equal_nan=True)
    assert torch.isnan(got[:, 3]).all() and torch.equal(got[:, 0], x[256, 0].expand(5))


def test_return_normalizer_update_traces_without_a_graph_break():
    norm = ReturnNormalizer(decay=0.0)
    torch.compile(norm.update, fullgraph=True, backend="eager")(torch.linspace(0, 100, 101).unsqueeze(-1))
    assert norm.scale().item() == pytest.approx(90.0)
