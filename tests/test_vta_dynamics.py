"""VTADynamics: protocol, state keys/shapes, boundary bookkeeping, kl weighting, generation, bad input."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imwm.dynamics.base import Dynamics, check_dynamics
from imwm.vta import VTA_STATE_KEYS, VTADynamics
from imwm.vta.boundary import READ_INDEX
from imwm.vta.layers import gaussian_kl

SMALL = dict(action_dim=3, embed_dim=6, abs_belief_dim=10, obs_belief_dim=12, abs_stoch_dim=4, obs_stoch_dim=5,
             hidden=8, boundary_hidden=8)


def small(**kw):
    return VTADynamics(**{**SMALL, **kw})


class FixedBoundary(nn.Module):
    """Stands in for the conv detector: READ logit +20 where pattern is 1, -20 elsewhere."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = torch.as_tensor(pattern, dtype=torch.float32)

    def forward(self, embed):
        read = self.pattern.expand(embed.shape[0], -1) * 40.0 - 20.0
        return torch.stack([read, torch.zeros_like(read)], -1)


class AlwaysRead(nn.Module):
    """Stands in for the prior detector: READ logit +20 at every step."""

    def forward(self, feat):
        read = torch.full_like(feat[..., 0], 20.0)
        return torch.stack([read, torch.zeros_like(read)], -1) if READ_INDEX == 0 else torch.stack(
            [torch.zeros_like(read), read], -1)


def test_protocol_and_default_state_shapes():
    vta = VTADynamics(action_dim=4, embed_dim=16)
    check_dynamics(vta)
    assert isinstance(vta, Dynamics)
    s = vta.initial(3)
    want = dict(abs_belief=512, abs_stoch=32, abs_mean=32, abs_std=32, obs_belief=512, obs_stoch=32, obs_mean=32,
                obs_std=32, boundary=1, boundary_logit=2, seg_len=1, seg_num=1)
    assert set(s.keys()) == set(want) == set(VTA_STATE_KEYS)
    for k, n in want.items():
        assert s[k].shape == (3, n), k
    assert vta.feat_dim == 512 + 32 + 512 + 32 and vta.get_feat(s).shape == (3, vta.feat_dim)


def test_observe_shapes_and_gradients():
    vta = small()
    embed = torch.randn(2, 7, 6, requires_grad=True)
    post, prior = vta.observe(embed, torch.randn(2, 7, 3), torch.zeros(2, 7, 1, dtype=torch.bool))
    for td in (post, prior):
        assert td.batch_size == (2, 7) and set(td.keys()) == set(VTA_STATE_KEYS)
    assert post["abs_belief"].shape == (2, 7, 10) and post["obs_stoch"].shape == (2, 7, 5)
    loss, metrics = vta.kl_loss(post, prior, free_bits=0.0, dyn_scale=0.5, rep_scale=0.1)
    assert loss.shape == (2, 7) and metrics["kl"].shape == (2, 7)
    loss.sum().backward()
    # boundary gradients reach the conv detector through the straight-through READ flag
    assert vta.post_boundary.net[0].weight.grad.abs().sum() > 0
    assert vta.prior_boundary.net[0].weight.grad.abs().sum() > 0
    assert embed.grad.abs().sum() > 0


def test_segment_bookkeeping_on_known_boundaries():
    vta = small().eval()
    pattern = [1, 0, 0, 1, 0, 1, 0, 0, 0]
    vta.post_boundary = FixedBoundary(pattern)
    post, prior = vta.observe(torch.randn(2, 9, 6), torch.randn(2, 9, 3), torch.zeros(2, 9, 1, dtype=torch.bool))
    assert post["boundary"][..., 0].tolist() == [pattern] * 2
    assert post["seg_len"][0, :, 0].tolist() == [1, 2, 3, 1, 2, 1, 2, 3, 4]
    assert post["seg_num"][0, :, 0].tolist() == [1, 1, 1, 2, 2, 3, 3, 3, 3]
    for t, b in enumerate(pattern):
        if t and not b:  # COPY: the abstract state is a copy
            for k in ("abs_belief", "abs_stoch", "abs_mean", "abs_std"):
                assert torch.equal(post[k][:, t], post[k][:, t - 1]), (k, t)
        elif t:  # READ: it transitions
            assert not torch.equal(post["abs_belief"][:, t], post["abs_belief"][:, t - 1])
    # observation level is reset at READ: obs belief at a READ does not depend on the previous obs state
    vta2 = copy.deepcopy(vta)
    torch.manual_seed(1)
    e, a = torch.randn(1, 9, 6), torch.randn(1, 9, 3)
    torch.manual_seed(2)
    p1, _ = vta.observe(e, a, torch.zeros(1, 9, 1, dtype=torch.bool))
    e2 = e.clone()
    e2[:, 1] += 3.0  # changes the observation state at t=1 only (inside segment 0)
    torch.manual_seed(2)
    p2, _ = vta2.observe(e2, a, torch.zeros(1, 9, 1, dtype=torch.bool))
    assert not torch.allclose(p1["obs_belief"][:, 2], p2["obs_belief"][:, 2])
    # at t=3 (READ) obs_belief = GRU([0, a, abs], 0): only the abstract level carries the past
    diff_abs = (p1["abs_belief"][:, 3] - p2["abs_belief"][:, 3]).abs().max()
    assert diff_abs == 0  # the abstract transition reads abs_stoch, unaffected by frame 1's obs state
    torch.testing.assert_close(p1["obs_belief"][:, 3], p2["obs_belief"][:, 3])


def test_first_step_and_is_first_force_read():
    vta = small().eval()
    vta.post_boundary = FixedBoundary([0] * 6)  # the detector never fires
    is_first = torch.zeros(1, 6, 1, dtype=torch.bool)
    is_first[0, 3] = True
    post, _ = vta.observe(torch.randn(1, 6, 6), torch.randn(1, 6, 3), is_first)
    assert post["boundary"][0, :, 0].tolist() == [1, 0, 0, 1, 0, 0]
    assert post["seg_num"][0, :, 0].tolist() == [1, 1, 1, 1, 1, 1]
    assert post["seg_len"][0, :, 0].tolist() == [1, 2, 3, 1, 2, 3]


def test_min_seg_len_keeps_reads_off_a_segment_shorter_than_it():
    torch.manual_seed(0)
    vta = small(min_seg_len=2).eval()
    vta.post_boundary = FixedBoundary([0, 1, 0, 1, 1, 0, 1, 1, 1])
    embed, action = torch.randn(2, 9, 6), torch.zeros(2, 9, 3)
    post, prior = vta.observe(embed, action, torch.zeros(2, 9, 1, dtype=torch.bool))
    # step 0 is forced READ, so 1 is blocked; 3 READs, 4 blocked; 6 READs, 7 blocked, 8 READs
    assert post["boundary"][0, :, 0].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 1]
    assert post["seg_len"][0, :, 0].tolist() == [1, 2, 3, 1, 2, 3, 1, 2, 1]
    blocked = [1, 4, 7]
    copy_logits = torch.tensor([-10.0, 10.0]) if READ_INDEX == 0 else torch.tensor([10.0, -10.0])
    assert torch.equal(post["boundary_logit"][:, blocked], copy_logits.expand(2, 3, 2))
    assert torch.equal(prior["boundary_logit"][:, blocked], post["boundary_logit"][:, blocked])
    _, metrics = vta.kl_loss(post, prior, free_bits=0.0, dyn_scale=0.5, rep_scale=0.1)
    assert torch.equal(metrics["boundary_kl"][:, blocked], torch.zeros(2, 3))
    # boundaries given from outside obey it too, and 1 leaves them as they are
    given = torch.tensor([1.0, 1, 0, 1, 1, 1, 0, 0, 1]).view(1, 9, 1).expand(2, 9, 1)
    post, _ = vta.observe(embed, action, torch.zeros(2, 9, 1, dtype=torch.bool), boundary=given)
    assert post["boundary"][0, :, 0].tolist() == [1, 0, 0, 1, 0, 1, 0, 0, 1]
    free = small().eval()
    post, _ = free.observe(embed, action, torch.zeros(2, 9, 1, dtype=torch.bool), boundary=given)
    assert post["boundary"][0, :, 0].tolist() == given[0, :, 0].tolist()
    # the prior detector in imagination: a READ always opens a segment of at least 2 steps
    state, reads = vta.initial(64), []
    vta.prior_boundary = AlwaysRead()
    for _ in range(6):
        state = vta.img_step(state, torch.zeros(64, 3))
        reads.append(state["boundary"][:, 0])
    assert torch.stack(reads, 1)[0].tolist() == [1, 0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="min_seg_len"):
        small(min_seg_len=0)


def test_max_seg_len_forcing_and_zero_force():
    pattern = [0] * 12
    forced = small(max_seg_len=3, max_seg_num=100, boundary_force_scale=100.0).eval()
    forced.post_boundary = FixedBoundary(pattern)
    post, _ = forced.observe(torch.randn(1, 12, 6), torch.zeros(1, 12, 3), torch.zeros(1, 12, 1, dtype=torch.bool))
    assert post["boundary"][0, :, 0].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    free = small(max_seg_len=3, max_seg_num=100, boundary_force_scale=0.0).eval()
    free.post_boundary = FixedBoundary(pattern)
    post, _ = free.observe(torch.randn(1, 12, 6), torch.zeros(1, 12, 3), torch.zeros(1, 12, 1, dtype=torch.bool))
    assert post["boundary"][0, :, 0].tolist() == [1] + [0] * 11
    # max_seg_num pushes COPY once enough segments exist
    capped = small(max_seg_len=100, max_seg_num=2, boundary_force_scale=100.0).eval()
    capped.post_boundary = FixedBoundary([1] * 6)
    post, _ = capped.observe(torch.randn(1, 6, 6), torch.zeros(1, 6, 3), torch.zeros(1, 6, 1, dtype=torch.bool))
    assert post["boundary"][0, :, 0].tolist() == [1, 1, 0, 0, 0, 0]


def test_kl_abstract_term_is_zero_on_copy():
    vta = small().eval()
    pattern = [1, 0, 0, 1, 0, 0]
    vta.post_boundary = FixedBoundary(pattern)
    post, prior = vta.observe(torch.randn(2, 6, 6), torch.randn(2, 6, 3), torch.zeros(2, 6, 1, dtype=torch.bool))
    kw = dict(free_bits=0.0, dyn_scale=0.5, rep_scale=0.1)
    base, metrics = vta.kl_loss(post, prior, **kw)
    moved = prior.clone()
    moved["abs_mean"] = prior["abs_mean"] + 1.0  # a different abstract prior everywhere
    loss2, _ = vta.kl_loss(post, moved, **kw)
    copy = torch.tensor(pattern) == 0
    torch.testing.assert_close(loss2[:, copy], base[:, copy])  # COPY steps: abstract KL does not count
    assert (loss2[:, ~copy] > base[:, ~copy]).all()  # READ steps: it does
    # hand formula at a READ step with free bits 0: 0.6 * (KL_z + KL_s + KL_m)
    t = 3
    expected = 0.6 * (metrics["kl_abs"][:, t] + metrics["kl_obs"][:, t] + metrics["kl_boundary"][:, t])
    torch.testing.assert_close(base[:, t], expected)
    torch.testing.assert_close(metrics["kl"][:, t], metrics["kl_abs"][:, t] + metrics["kl_obs"][:, t] + metrics["kl_boundary"][:, t])
    # free bits clamp each level
    fb, _ = vta.kl_loss(post, prior, free_bits=100.0, dyn_scale=0.5, rep_scale=0.1)
    torch.testing.assert_close(fb[:, 1], torch.full((2,), 0.6 * 100.0) + 0.6 * metrics["kl_boundary"][:, 1])


def test_boundary_rate_prior():
    vta = small(boundary_rate=0.2, boundary_scale=3.0)
    post, prior = vta.observe(torch.randn(2, 5, 6), torch.zeros(2, 5, 3), torch.zeros(2, 5, 1, dtype=torch.bool))
    loss, m = vta.kl_loss(post, prior, free_bits=0.0, dyn_scale=0.5, rep_scale=0.1)
    off = small()
    off.load_state_dict(vta.state_dict())
    p = torch.softmax(post["boundary_logit"], -1)[..., 0][:, 1:].mean(1)  # forced first READ left out
    bern = p * torch.log(p / 0.2) + (1 - p) * torch.log((1 - p) / 0.8)
    torch.testing.assert_close(m["boundary_kl"], bern.detach()[:, None].expand(2, 5))
    base, _ = off.kl_loss(post, prior, free_bits=0.0, dyn_scale=0.5, rep_scale=0.1)
    torch.testing.assert_close(loss, base + 3.0 * bern[:, None])
    with pytest.raises(ValueError, match="boundary_rate"):
        small(boundary_scale=1.0)


def test_img_obs_step_and_generation_shapes():
    vta = small()
    post, _ = vta.observe(torch.randn(2, 4, 6), torch.zeros(2, 4, 3), torch.zeros(2, 4, 1, dtype=torch.bool))
    nxt = vta.img_step(post[:, -1], torch.zeros(2, 3))
    assert nxt.batch_size == (2,) and set(nxt.keys()) == set(VTA_STATE_KEYS)
    flat = vta.img_step(post.reshape(-1), torch.zeros(8, 3))
    assert flat.batch_size == (8,) and flat["abs_belief"].shape == (8, 10)
    p1, pr1 = vta.obs_step(post[:, -1], torch.zeros(2, 3), torch.randn(2, 6), torch.tensor([[True], [False]]))
    assert p1.batch_size == (2,) and p1["seg_num"][0, 0] == 1 and p1["boundary"][0, 0] == 1
    assert p1["seg_num"][1, 0] >= post["seg_num"][1, -1, 0]
    jumpy = vta.jumpy_generation(post[:, -1], 5)
    assert jumpy.batch_size == (2, 5) and (jumpy["boundary"] == 1).all()
    assert (jumpy["seg_num"][:, :, 0] == post["seg_num"][:, -1] + torch.arange(1, 6)).all()
    full = vta.full_generation(post[:, -1], 7)
    assert full.batch_size == (2, 7) and full["boundary_logit"].shape == (2, 7, 2)
    assert vta.entropy(post).shape == (2, 4, 1) and vta.uncertainty(post).shape == (2, 4, 1)
    torch.testing.assert_close(vta.uncertainty(post), post["obs_std"].mean(-1, keepdim=True))


def test_schedules_follow_progress_and_are_saved():
    vta = small(boundary_force_scale=0.0, boundary_force_schedule="linear", boundary_force_start=2.0,
                boundary_force_decay_updates=10, boundary_temp=1.0, boundary_temp_min=0.5,
                boundary_temp_anneal_rate=0.1)
    assert vta.current_force_scale == 2.0 and vta.current_temp == 1.0
    vta.set_progress(5)
    assert vta.current_force_scale == pytest.approx(1.0)
    again = small(**{k: v for k, v in vta.boundary_options().items()})
    again.load_state_dict(vta.state_dict())
    assert again.current_force_scale == pytest.approx(1.0) and again.boundary_options() == vta.boundary_options()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_seg_len=0), "max_seg_len"),
        (dict(boundary_temp=-1.0), "boundary_temp"),
        (dict(boundary_force_scale=-0.5), "force_scale"),
        (dict(boundary_force_schedule="cosine", boundary_force_decay_updates=5), "schedule"),
        (dict(hidden=0), "hidden"),
        (dict(min_std=0.0), "min_std"),
        (dict(bogus=1), "unknown boundary options"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        small(**kwargs)


def test_bad_input_shapes():
    vta = small()
    ok = dict(embed=torch.randn(2, 4, 6), action=torch.zeros(2, 4, 3), is_first=torch.zeros(2, 4, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="embed"):
        vta.observe(**{**ok, "embed": torch.randn(2, 4, 7)})
    with pytest.raises(ValueError, match=r"embed must be \[B, T, E\]"):
        vta.observe(**{**ok, "embed": torch.randn(2, 6)})
    with pytest.raises(ValueError, match="action"):
        vta.observe(**{**ok, "action": torch.zeros(2, 4, 2)})
    with pytest.raises(ValueError, match="is_first"):
        vta.observe(**{**ok, "is_first": torch.zeros(2, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="action"):
        vta.img_step(vta.initial(2), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="embed"):
        vta.obs_step(vta.initial(2), torch.zeros(2, 3), torch.randn(2, 5), torch.zeros(2, 1, dtype=torch.bool))


def test_registry_builds_vta_from_config_keys():
    from imwm.training.build_model import DYNAMICS_BUILDERS, build_dynamics

    assert "vta" in DYNAMICS_BUILDERS
    cfg = {"name": "vta", **{k: v for k, v in SMALL.items() if k not in ("action_dim", "embed_dim")},
           "max_seg_len": 50, "boundary_force_scale": 0.0}
    vta = build_dynamics(cfg, action_dim=3, embed_dim=6)
    assert isinstance(vta, VTADynamics) and vta.max_seg_len == 50 and vta.boundary_force_scale == 0.0
    with pytest.raises(ValueError, match="dynamics.bogus"):
        build_dynamics({**cfg, "bogus": 1}, action_dim=3, embed_dim=6)


def _abs_posterior_means(vta, embed):
    torch.manual_seed(0)
    post, _ = vta.eval().observe(embed, torch.zeros(1, 8, 3), torch.zeros(1, 8, 1, dtype=torch.bool))
    return post["abs_mean"][0]


def test_segment_posterior_reads_its_own_segment_only():
    torch.manual_seed(0)
    vta = small(segment_posterior=True)
    vta.post_boundary = FixedBoundary([1, 0, 0, 1, 0, 0, 0, 0])  # segments 0-2 and 3-7
    embed = torch.randn(1, 8, 6)
    base = _abs_posterior_means(vta, embed)
    later = embed.clone()
    later[:, 6] += 1.0  # inside the second segment, after its start
    moved = _abs_posterior_means(vta, later)
    assert torch.equal(moved[0], base[0])  # the first segment's z never sees step 6
    assert not torch.allclose(moved[3], base[3])  # the second segment's z, fixed at its READ, does
    earlier = embed.clone()
    earlier[:, 2] += 1.0  # the first segment's last step
    assert not torch.allclose(_abs_posterior_means(vta, earlier)[0], base[0])


def test_frame_posterior_does_not_look_ahead():
    torch.manual_seed(0)
    vta = small()
    vta.post_boundary = FixedBoundary([1, 0, 0, 1, 0, 0, 0, 0])
    embed = torch.randn(1, 8, 6)
    later = embed.clone()
    later[:, 2] += 1.0
    assert torch.equal(_abs_posterior_means(vta, later)[0], _abs_posterior_means(vta, embed)[0])


def test_segment_posterior_online_step_and_bad_value():
    vta = small(segment_posterior=True)
    post, prior = vta.obs_step(vta.initial(2), torch.zeros(2, 3), torch.randn(2, 6), torch.ones(2, 1, dtype=torch.bool))
    assert post["abs_mean"].shape == (2, 4) and torch.isfinite(post["abs_mean"]).all()
    with pytest.raises(ValueError, match="segment_posterior"):
        small(segment_posterior="yes")


def _obs_means(vta, embed):
    torch.manual_seed(0)
    post, _ = vta.eval().observe(embed, torch.zeros(1, 8, 3), torch.zeros(1, 8, 1, dtype=torch.bool))
    return post["obs_mean"][0]


@pytest.mark.parametrize("obs_reset", [True, False])
def test_obs_reset_decides_whether_the_observation_level_crosses_a_read(obs_reset):
    torch.manual_seed(0)
    vta = small(obs_reset=obs_reset)
    vta.post_boundary = FixedBoundary([1, 0, 0, 1, 0, 0, 0, 0])  # READ at 3
    embed = torch.randn(1, 8, 6)
    earlier = embed.clone()
    earlier[:, 1] += 1.0  # before the READ; z of the second segment does not read step 1
    base, moved = _obs_means(vta, embed), _obs_means(vta, earlier)
    assert not torch.allclose(moved[2], base[2])  # same segment: the observation level carries it
    # across the READ only the observation level can carry step 1 (z is fixed from embed_3)
    assert torch.allclose(moved[3:], base[3:]) == obs_reset


def test_obs_reset_bad_value():
    with pytest.raises(ValueError, match="obs_reset"):
        small(obs_reset="no")


def _detector_inputs(vta, embed, keep_graph=False):
    seen = []
    hook = vta.post_boundary.register_forward_hook(
        lambda m, args, out: seen.append(args[0] if keep_graph else args[0].detach()))
    vta.observe(embed, torch.zeros(*embed.shape[:2], 3), torch.zeros(*embed.shape[:2], 1, dtype=torch.bool))
    hook.remove()
    return seen[0]


def test_boundary_surprise_is_a_causal_gradient_free_input_of_the_detector():
    torch.manual_seed(0)
    vta = small(boundary_surprise=True, boundary_causal=True)
    assert vta.post_boundary.in_dim == 6 + 1
    embed = torch.randn(2, 8, 6, requires_grad=True)
    x = _detector_inputs(vta, embed)
    surprise = x[..., -1]
    assert x.shape == (2, 8, 7) and torch.equal(x[..., :6], embed.detach())
    assert (surprise >= 0).all() and torch.isfinite(surprise).all()
    assert surprise.std() > 0  # it varies over steps: the KL of real posteriors against priors
    later = embed.detach().clone()
    later[:, 5] += 3.0
    moved = _detector_inputs(vta, later)[..., -1]
    assert torch.equal(moved[:, :5], surprise[:, :5]) and not torch.allclose(moved[:, 5], surprise[:, 5])
    # the detector's own weights do not enter it, and the training loss gets no gradient through it
    with torch.no_grad():
        for p in vta.post_boundary.parameters():
            p.add_(1.0)
    assert torch.equal(_detector_inputs(vta, embed)[..., -1], surprise)
    x = _detector_inputs(vta, embed, keep_graph=True)
    (grad,) = torch.autograd.grad(x.sum(), embed)
    assert torch.equal(grad, torch.ones_like(grad))  # the embedding channels only: nothing through the surprise
    with pytest.raises(ValueError, match="boundary_surprise"):
        small(boundary_surprise=1)


def test_boundary_surprise_skip_moves_the_read_log_odds_by_gain_times_the_normalised_surprise():
    torch.manual_seed(0)
    plain = small(boundary_surprise=True, boundary_causal=True)
    torch.manual_seed(0)
    skip = small(boundary_surprise=True, boundary_causal=True, boundary_surprise_skip=True)
    assert float(skip.surprise_skip.gain.detach()) == 0.0
    embed, action = torch.randn(3, 8, 6), torch.zeros(3, 8, 3)
    first = torch.zeros(3, 8, 1, dtype=torch.bool)
    surprise = _detector_inputs(plain, embed)[..., -1]  # [B, T]

    def logits(vta):
        torch.manual_seed(1)
        post, _ = vta.observe(embed, action, first)
        return post["boundary_logit"]

    assert torch.equal(logits(skip), logits(plain))  # a zero gain is the plain detector
    with torch.no_grad():
        skip.surprise_skip.gain.fill_(0.2)  # stored /10: a gain of 2 on the normalised surprise
    moved, base = logits(skip), logits(plain)
    norm = _batch_normed(surprise[:, 1:])
    log_odds = lambda lg: lg[..., READ_INDEX] - lg[..., 1 - READ_INDEX]  # noqa: E731
    torch.testing.assert_close(log_odds(moved)[:, 1:] - log_odds(base)[:, 1:], 2.0 * norm, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(moved[:, 0], base[:, 0])  # the forced first READ is untouched
    post, _ = skip.observe(embed, action, first)
    (grad,) = torch.autograd.grad(torch.sigmoid(log_odds(post["boundary_logit"])).sum(), skip.surprise_skip.gain)
    assert grad.abs() > 0
    with pytest.raises(ValueError, match="boundary_surprise_skip=True needs boundary_surprise=True"):
        small(boundary_surprise_skip=True)


def test_without_the_conv_detector_the_read_log_odds_are_gain_times_surprise_plus_bias():
    torch.manual_seed(0)
    vta = small(boundary_surprise=True, boundary_surprise_skip=True, boundary_conv=False, max_seg_len=100,
                max_seg_num=100)  # no segment-length push on top of the log-odds
    assert vta.post_boundary is None
    embed = torch.randn(3, 8, 6)
    surprise = _surprise_of(vta, embed)
    with torch.no_grad():
        vta.surprise_skip.gain.fill_(0.3)
        vta.surprise_skip.bias.fill_(-0.1)  # both stored /10
    post, _ = vta.observe(embed, torch.zeros(3, 8, 3), torch.zeros(3, 8, 1, dtype=torch.bool))
    logit = post["boundary_logit"]
    norm = _batch_normed(surprise[:, 1:])
    torch.testing.assert_close(logit[:, 1:, READ_INDEX] - logit[:, 1:, 1 - READ_INDEX], 3.0 * norm - 1.0,
                               atol=1e-4, rtol=1e-4)
    first = torch.zeros(3, 8, 1, dtype=torch.bool)
    torch.testing.assert_close(vta.detector_logits(embed, torch.zeros(3, 8, 3), first)[:, 1:], logit[:, 1:])
    with pytest.raises(ValueError, match="boundary_conv=False needs boundary_surprise_skip=True"):
        small(boundary_surprise=True, boundary_conv=False)


# the surprise-only detector with no segment-length push on top of its log-odds
SURPRISE_ONLY = dict(boundary_surprise=True, boundary_surprise_skip=True, boundary_conv=False, max_seg_len=100,
                     max_seg_num=100)


def _read_log_odds(logits):
    return logits[..., READ_INDEX] - logits[..., 1 - READ_INDEX]


def _surprise_only(**kw):
    """A seeded surprise-only detector with gain 2 and threshold 1 (both stored /10)."""
    torch.manual_seed(0)
    vta = small(**SURPRISE_ONLY, **kw)
    with torch.no_grad():
        vta.surprise_skip.gain.fill_(0.2)
        vta.surprise_skip.bias.fill_(-0.1)
    return vta


def test_surprise_window_adds_learned_gains_on_earlier_steps_cut_at_episode_starts():
    vta = _surprise_only(boundary_surprise_window=3)
    assert vta.surprise_skip.history_gain.shape == (2,) and not vta.surprise_skip.history_gain.detach().any()
    embed, action = torch.randn(3, 8, 6), torch.zeros(3, 8, 3)
    first = torch.zeros(3, 8, 1, dtype=torch.bool)
    flat = _read_log_odds(vta.detector_logits(embed, action, first))
    single = _surprise_only()
    single.load_state_dict({k: v for k, v in vta.state_dict().items() if k != "surprise_skip.history_gain"})
    torch.testing.assert_close(flat, _read_log_odds(single.detector_logits(embed, action, first)))  # zero gains
    with torch.no_grad():
        vta.surprise_skip.history_gain.copy_(torch.tensor([-0.15, 0.05]))  # stored /10: -1.5 on t-1, 0.5 on t-2
    z = F.pad(_batch_normed(_surprise_of(vta, embed)[:, 1:]), (1, 0))  # [B, T], 0 at the first step
    want = 2.0 * z - 1.0
    want[:, 1:] += -1.5 * z[:, :-1]
    want[:, 2:] += 0.5 * z[:, :-2]
    torch.testing.assert_close(_read_log_odds(vta.detector_logits(embed, action, first))[:, 1:], want[:, 1:],
                               atol=1e-4, rtol=1e-4)
    # an episode that starts at step 4: steps 4 and 5 read nothing from before it
    first[:, 4] = True
    cut = _read_log_odds(vta.detector_logits(embed, action, first))
    keep = torch.ones(8)
    keep[4] = 0.0
    z = F.pad(_batch_normed(_surprise_of(vta, embed, keep)[:, 1:]), (1, 0))
    want = 2.0 * z - 1.0
    want[:, 1:] += -1.5 * z[:, :-1] * keep[1:]
    want[:, 2:] += 0.5 * z[:, :-2] * keep[1:-1] * keep[2:]
    torch.testing.assert_close(cut[:, [1, 2, 3, 5, 6, 7]], want[:, [1, 2, 3, 5, 6, 7]], atol=1e-4, rtol=1e-4)
    post, _ = vta.observe(embed, action, first)
    (grad,) = torch.autograd.grad(torch.sigmoid(_read_log_odds(post["boundary_logit"])).sum(),
                                  vta.surprise_skip.history_gain)
    assert (grad.abs() > 0).all()
    with pytest.raises(ValueError, match="boundary_surprise_window > 1 needs boundary_surprise_skip=True"):
        small(boundary_surprise=True, boundary_surprise_window=2)
    with pytest.raises(ValueError, match="boundary_surprise_window"):
        small(boundary_surprise_window=0, **SURPRISE_ONLY)


def test_a_checkpoint_from_before_the_skip_was_its_own_module_still_loads():
    from imwm.vta.surprise_skip import LEGACY_KEYS

    vta = _surprise_only(boundary_surprise_window=2, boundary_surprise_abstract=True)
    with torch.no_grad():
        vta.surprise_skip.history_gain.fill_(-0.1)
        vta.surprise_skip.abstract_gain.fill_(0.05)
    embed, action = torch.randn(3, 8, 6), torch.zeros(3, 8, 3)
    first = torch.zeros(3, 8, 1, dtype=torch.bool)
    vta.observe(embed, action, first)  # batch-norm statistics to carry over as well
    # the names these weights had when they were attributes of VTADynamics itself
    new_to_old = {new: old for old, new in LEGACY_KEYS.items()}
    old_state = {}
    for key, value in vta.state_dict().items():
        name = key.removeprefix("surprise_skip.")
        head = next((n for n in new_to_old if name == n or (n.endswith(".") and name.startswith(n))), None)
        old_state[key if key == name else new_to_old[head] + name[len(head):]] = value
    assert {"surprise_gain", "surprise_history_gain", "surprise_bias", "abstract_gain",
            "surprise_norm.running_mean", "abstract_norm.running_var"} <= set(old_state)
    fresh = small(**SURPRISE_ONLY, boundary_surprise_window=2, boundary_surprise_abstract=True)
    fresh.load_state_dict(old_state)  # strict: every key found a home
    for key, value in vta.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    vta.eval(), fresh.eval()
    torch.testing.assert_close(fresh.detector_logits(embed, action, first), vta.detector_logits(embed, action, first))
    # an optimiser state saved then lists the parameters in the same order as now
    names = [n for n, _ in vta.named_parameters()]
    assert names.index("surprise_skip.gain") < names.index("surprise_skip.history_gain") \
        < names.index("surprise_skip.abstract_gain") < names.index("surprise_skip.bias") < names.index("prior_boundary.net.0.weight")


def test_abstract_step_adds_a_learned_gain_on_how_far_z_would_move_between_frames():
    vta = _surprise_only(boundary_surprise_abstract=True)
    assert float(vta.surprise_skip.abstract_gain.detach()) == 0.0
    embed, action = torch.randn(3, 8, 6), torch.zeros(3, 8, 3)
    first = torch.zeros(3, 8, 1, dtype=torch.bool)
    plain = _surprise_only()
    plain.load_state_dict({k: v for k, v in vta.state_dict().items() if "abstract" not in k})
    torch.testing.assert_close(_read_log_odds(vta.detector_logits(embed, action, first)),
                               _read_log_odds(plain.detector_logits(embed, action, first)))  # zero gain
    with torch.no_grad():
        vta.surprise_skip.abstract_gain.fill_(-0.3)  # stored /10
        # the step by hand: the all-COPY pass holds the abstract belief of its first READ
        belief = vta.initial(3)["abs_belief"]
        belief = vta.abs_gru(torch.cat([torch.zeros(3, vta.abs_stoch_dim), action[:, 0]], -1), belief)
        m, s = vta.post_abs.mean_std(torch.cat([belief.unsqueeze(1).expand(3, 8, -1), embed], -1))
        step = torch.log1p(gaussian_kl(m[:, 1:], s[:, 1:], m[:, :-1], s[:, :-1]))
    z = _batch_normed(_surprise_of(vta, embed)[:, 1:])
    want = 2.0 * z - 1.0 - 3.0 * _batch_normed(step)
    torch.testing.assert_close(_read_log_odds(vta.detector_logits(embed, action, first))[:, 1:], want,
                               atol=1e-4, rtol=1e-4)
    first[:, 4] = True  # a new episode at step 4: its step reads nothing from the one before
    keep = torch.ones(8)
    keep[4] = 0.0
    step = _surprise_of(vta, embed, keep, channel=1)
    assert step.shape == (3, 8) and (step[:, [0, 4]] == 0).all() and (step[:, [1, 2, 3, 5]] > 0).all()
    post, _ = vta.observe(embed, action, first)
    (grad,) = torch.autograd.grad(torch.sigmoid(_read_log_odds(post["boundary_logit"])).sum(), vta.surprise_skip.abstract_gain)
    assert grad.abs() > 0
    conv = small(boundary_surprise=True, boundary_surprise_skip=True, boundary_surprise_abstract=True)
    conv.observe(embed, action, first)  # the conv detector reads the step as one more input channel
    with pytest.raises(ValueError, match="boundary_surprise_abstract=True needs boundary_surprise_skip=True"):
        small(boundary_surprise=True, boundary_surprise_abstract=True)


def _batch_normed(x):
    """What a BatchNorm1d without affine terms makes of ``x`` in training mode (biased variance, eps 1e-5)."""
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5)


def _surprise_of(vta, embed, keep=None, channel=0):
    """The all-COPY surprise ``[B, T]`` as observe() computes it (``channel=1``: the abstract step);
    ``keep`` ``[T]`` (0 where an episode starts)."""
    with torch.no_grad():
        B, T = embed.shape[:2]
        keep = torch.ones(T) if keep is None else keep
        k = keep.view(1, T, 1).expand(B, T, 1)
        return vta._surprise(embed, torch.zeros(B, T, 3), k, vta.initial(B), (keep == 0).tolist())[..., channel]


def test_obs_kl_scale_weights_only_the_observation_latent_terms():
    torch.manual_seed(0)
    vta = small()
    post, prior = vta.observe(torch.randn(2, 6, 6), torch.zeros(2, 6, 3), torch.zeros(2, 6, 1, dtype=torch.bool))
    kw = dict(free_bits=0.0, dyn_scale=0.5, rep_scale=0.1)
    _, base = vta.kl_loss(post, prior, **kw)
    vta.obs_kl_scale = 3.0
    _, scaled = vta.kl_loss(post, prior, **kw)
    read = post["boundary"][..., 0]
    z_part = read * 0.6 * base["kl_abs"]  # both halves of a KL equal its value
    assert torch.allclose(scaled["kl_state"] - z_part, 3.0 * (base["kl_state"] - z_part), atol=1e-5)
    with pytest.raises(ValueError, match="obs_kl_scale"):
        small(obs_kl_scale=0)


def test_surprise_measure_shift_reads_the_kl_mean_term_only():
    vta = _surprise_only()
    shift = _surprise_only(boundary_surprise_measure="shift")
    shift.load_state_dict(vta.state_dict())
    embed, action = torch.randn(3, 8, 6), torch.zeros(3, 8, 3)
    first = torch.zeros(3, 8, 1, dtype=torch.bool)
    lat = vta.copy_latents(embed, action, first)
    mean_term = 0.5 * ((lat["post_mean"] - lat["prior_mean"]) / lat["prior_std"]).pow(2).sum(-1)
    whole = gaussian_kl(lat["post_mean"], lat["post_std"], lat["prior_mean"], lat["prior_std"])
    torch.testing.assert_close(shift.copy_surprise(embed, action, first)[..., 0], torch.log1p(mean_term))
    torch.testing.assert_close(vta.copy_surprise(embed, action, first)[..., 0], torch.log1p(whole))
    assert (mean_term < whole).all()  # the width term is positive wherever the widths differ
    with pytest.raises(ValueError, match="boundary_surprise_measure must be one of"):
        small(boundary_surprise_measure="pixels", **SURPRISE_ONLY)
