"""WorldModel: keys, build(), and plugging in any Dynamics."""

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from imwm.dynamics import RSSMDynamics
from imwm.world_model import ImageDecoder, ImageEncoder, VectorDecoder, VectorEncoder, WorldModel

A = 3


def rssm_factory(embed_dim):
    return RSSMDynamics(deter=16, stoch=2, classes=4, hidden=12, blocks=2, action_dim=A,
                        embed_dim=embed_dim)


class ScaledKLDynamics(nn.Module):
    """A Dynamics that is not an RSSMDynamics: wraps one, adds a state key and a KL metric."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.feat_dim, self.action_dim = inner.feat_dim, inner.action_dim
        self.embed_dim = inner.embed_dim

    def _add(self, state):
        state = state.clone(False)
        state["extra"] = state["deter"][..., :1] * 0
        return state

    def initial(self, batch_size):
        return self._add(self.inner.initial(batch_size))

    def observe(self, embed, action, is_first, state=None):
        post, prior = self.inner.observe(embed, action, is_first, None)
        return self._add(post), self._add(prior)

    def obs_step(self, state, action, embed, is_first):
        post, prior = self.inner.obs_step(state, action, embed, is_first)
        return self._add(post), self._add(prior)

    def img_step(self, state, action):
        return self._add(self.inner.img_step(state, action))

    def get_feat(self, state):
        return self.inner.get_feat(state)

    def kl_loss(self, posterior, prior, *, free_bits, dyn_scale, rep_scale):
        loss, metrics = self.inner.kl_loss(posterior, prior, free_bits=free_bits,
                                           dyn_scale=dyn_scale, rep_scale=rep_scale)
        metrics["boundary_rate"] = torch.full_like(loss, 0.25)
        return 2 * loss, metrics

    def entropy(self, state):
        return self.inner.entropy(state)

    def uncertainty(self, state):
        return self.inner.uncertainty(state)


def image_batch(b=2, t=4):
    return TensorDict(
        {
            "observation": torch.randint(0, 256, (b, t, 3, 64, 64), dtype=torch.uint8),
            "action": torch.nn.functional.one_hot(torch.randint(0, A, (b, t)), A).float(),
            "is_first": torch.zeros(b, t, 1, dtype=torch.bool),
        },
        [b, t],
    )


def test_build_image_world_model_and_keys():
    wm = WorldModel.build((3, 64, 64), A, rssm_factory, cnn_depth=2, mlp_units=8, mlp_layers=1,
                          learned_std=True)
    assert isinstance(wm.encoder, ImageEncoder) and isinstance(wm.decoder, ImageDecoder)
    assert wm.decoder.learned_std
    assert WorldModel.embed_dim_for((3, 64, 64), cnn_depth=2, mlp_units=8) == wm.encoder.embed_dim
    td = wm(image_batch())
    for key in wm.out_keys:
        assert key in td.keys(True, True), key
    assert td["embed"].shape == (2, 4, wm.encoder.embed_dim)
    assert td["feat"].shape == (2, 4, wm.feat_dim)
    assert td["posterior", "logits"].shape == (2, 4, 2, 4)


def test_build_vector_world_model_with_instance():
    dyn = rssm_factory(WorldModel.embed_dim_for((5,), cnn_depth=2, mlp_units=8))
    wm = WorldModel.build((5,), A, dyn, cnn_depth=2, mlp_units=8, mlp_layers=2)
    assert isinstance(wm.encoder, VectorEncoder) and isinstance(wm.decoder, VectorDecoder)
    assert wm.dynamics is dyn
    is_first = torch.ones(2, 3, 1, dtype=torch.bool)
    out = wm.observe(torch.randn(2, 3, 5), torch.zeros(2, 3, A), is_first)
    assert out.batch_size == (2, 3) and out["feat"].shape == (2, 3, dyn.feat_dim)


def test_build_vector_world_model_with_learned_std():
    wm = WorldModel.build((5,), A, rssm_factory, cnn_depth=2, mlp_units=8, mlp_layers=1,
                          learned_std=True, min_std=0.25)
    assert isinstance(wm.decoder, VectorDecoder)
    assert wm.decoder.learned_std and wm.decoder.min_std == 0.25
    is_first = torch.ones(2, 3, 1, dtype=torch.bool)
    feat = wm.observe(torch.randn(2, 3, 5), torch.zeros(2, 3, A), is_first)["feat"]
    decoded = wm.decoder(feat)
    assert decoded["vector"].shape == decoded["vector_std"].shape == (2, 3, 5)
    assert decoded["vector_std"].min() >= 0.25
    assert wm.decoder.mean_std(decoded).shape == (2, 3, 1)
    # without the flag the vector decoder keeps its old shape (existing checkpoints still load)
    plain = WorldModel.build((5,), A, rssm_factory, cnn_depth=2, mlp_units=8, mlp_layers=1)
    assert not plain.decoder.learned_std and "vector_std" not in plain.decoder(feat).keys()
    assert plain.decoder.mlp.out_features == 5 and wm.decoder.mlp.out_features == 10


def test_build_rejects_mismatches():
    with pytest.raises(ValueError, match="action_dim"):
        WorldModel.build((5,), A + 1, rssm_factory, cnn_depth=2, mlp_units=8, mlp_layers=1)
    with pytest.raises(ValueError, match="embed_dim"):
        WorldModel.build((5,), A, rssm_factory(99), cnn_depth=2, mlp_units=8, mlp_layers=1)
    with pytest.raises(ValueError, match="obs_shape"):
        WorldModel.build((2, 5), A, rssm_factory, cnn_depth=2, mlp_units=8, mlp_layers=1)
    with pytest.raises(ValueError, match="min_std must be > 0, got 0.0"):
        WorldModel.build((5,), A, rssm_factory, cnn_depth=2, mlp_units=8, mlp_layers=1,
                         learned_std=True, min_std=0.0)
    wm = WorldModel.build((5,), A, rssm_factory, cnn_depth=2, mlp_units=8, mlp_layers=1)
    with pytest.raises(KeyError, match="is_first"):
        wm(TensorDict({"observation": torch.randn(2, 3, 5), "action": torch.zeros(2, 3, A)},
                      [2, 3]))


def test_any_dynamics_plugs_in():
    wm = WorldModel.build((3, 64, 64), A, lambda e: ScaledKLDynamics(rssm_factory(e)),
                          cnn_depth=2, mlp_units=8, mlp_layers=1)
    assert ("posterior", "extra") in wm.out_keys
    td = wm(image_batch())
    assert td["posterior", "extra"].shape == (2, 4, 1)
    with pytest.raises(TypeError, match="Dynamics protocol"):
        WorldModel(encoder=wm.encoder, dynamics=nn.Linear(2, 2), decoder=wm.decoder,
                   reward_head=wm.reward_head, continue_head=wm.continue_head)
