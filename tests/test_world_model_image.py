"""Image encoder/decoder (k=4 s=2 CNN, channel LayerNorm) and the vector encoder/decoder."""

import math

import pytest
import torch
from tensordict import TensorDict

from imwm.nn import symlog
from imwm.world_model import (
    ChannelLayerNorm,
    ImageDecoder,
    ImageEncoder,
    VectorDecoder,
    VectorEncoder,
)


def frames(*lead):
    return torch.randint(0, 256, (*lead, 3, 64, 64), dtype=torch.uint8)


def test_encoder_shapes_and_architecture():
    enc = ImageEncoder(cnn_depth=4)
    assert enc.embed_dim == 4 * 8 * 4 * 4
    assert enc(frames(2, 3)).shape == (2, 3, 512)
    assert enc(frames(5)).shape == (5, 512)
    convs = [m for m in enc.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 16, 32]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    with pytest.raises(ValueError, match="uint8"):
        enc(torch.zeros(2, 3, 64, 64))


def test_encoder_input_is_scaled_to_centered_unit_range():
    enc = ImageEncoder(cnn_depth=2)
    seen = {}
    enc.net[0].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    obs = frames(4)
    enc(obs)
    assert torch.allclose(seen["x"], obs.float() / 255 - 0.5, atol=1e-6)


def test_channel_layer_norm_matches_definition():
    norm = ChannelLayerNorm(6, eps=1e-3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 5, 5)
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    scale, shift = norm.weight[:, None, None], norm.bias[:, None, None]
    expected = (x - mean) / torch.sqrt(var + 1e-3) * scale + shift
    assert torch.allclose(norm(x), expected, atol=1e-5)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(norm(x_cl), expected, atol=1e-5)


def test_channels_last_and_contiguous_give_the_same_function():
    enc_a = ImageEncoder(cnn_depth=2, channels_last=True)
    enc_b = ImageEncoder(cnn_depth=2, channels_last=False)
    enc_b.load_state_dict(enc_a.state_dict())
    dec_a = ImageDecoder(feat_dim=7, cnn_depth=2, channels_last=True)
    dec_b = ImageDecoder(feat_dim=7, cnn_depth=2, channels_last=False)
    dec_b.load_state_dict(dec_a.state_dict())
    obs, feat = frames(3), torch.randn(3, 7)
    assert torch.allclose(enc_a(obs), enc_b(obs), atol=1e-5)
    assert torch.allclose(dec_a(feat)["image"], dec_b(feat)["image"], atol=1e-5)


def test_decoder_shapes_std_floor_and_gradients():
    dec = ImageDecoder(feat_dim=10, cnn_depth=2, learned_std=True, min_std=0.1)
    feat = torch.randn(2, 3, 10)
    out = dec(feat)
    assert out.batch_size == (2, 3)
    assert out["image"].shape == out["image_std"].shape == (2, 3, 3, 64, 64)
    assert out["image_std"].min() >= 0.1
    enc = ImageEncoder(cnn_depth=2)
    loss = dec.loss(dec(feat + enc(frames(2, 3))[..., :10]), frames(2, 3))
    assert loss.shape == (2, 3)
    loss.sum().backward()
    for module in (enc, dec):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_decoder_loss_hand_values():
    obs = torch.full((2, 3, 64, 64), 255, dtype=torch.uint8)  # target 0.5 everywhere
    pixels = 3 * 64 * 64
    mse = ImageDecoder(feat_dim=4, cnn_depth=2)
    decoded = TensorDict({"image": torch.zeros(2, 3, 64, 64)}, [2])
    assert torch.allclose(mse.loss(decoded, obs), torch.full((2,), 0.25 * pixels))
    nll = ImageDecoder(feat_dim=4, cnn_depth=2, learned_std=True)
    decoded["image_std"] = torch.full((2, 3, 64, 64), 2.0)
    per_pixel = 0.5 * (0.5 / 2.0) ** 2 + math.log(2.0) + 0.5 * math.log(2 * math.pi)
    assert torch.allclose(nll.loss(decoded, obs), torch.full((2,), per_pixel * pixels), rtol=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        mse.loss(decoded, obs[:, :2])


def test_vector_encoder_uses_symlog_and_decoder_loss_is_symlog_mse():
    enc = VectorEncoder(obs_dim=3, mlp_units=8, mlp_layers=2)
    seen = {}
    enc.mlp.net[0].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    obs = torch.tensor([[100.0, -3.0, 0.0]])
    assert enc(obs).shape == (1, 8)
    assert torch.allclose(seen["x"], symlog(obs))
    dec = VectorDecoder(feat_dim=5, obs_dim=3, mlp_units=8, mlp_layers=1)
    decoded = TensorDict({"vector": torch.zeros(1, 3)}, [1])
    assert torch.allclose(dec.loss(decoded, obs), symlog(obs).square().sum(-1))
    out = dec(torch.randn(2, 4, 5))
    assert out["vector"].shape == (2, 4, 3)
    assert torch.allclose(dec.reconstruction(TensorDict({"vector": symlog(obs)}, [1])), obs)
    with pytest.raises(ValueError, match="obs_dim=3"):
        enc(torch.zeros(1, 4))


def test_vector_decoder_learned_std_nll_hand_value():
    dec = VectorDecoder(feat_dim=5, obs_dim=2, mlp_units=8, mlp_layers=1, learned_std=True)
    obs = torch.tensor([[math.e - 1.0, 0.0]])  # symlog: [1, 0]
    decoded = TensorDict({"vector": torch.tensor([[0.0, 0.5]]),
                          "vector_std": torch.tensor([[2.0, 0.5]])}, [1])
    # per dim: 0.5 ((mu - y) / s)^2 + log s + 0.5 log(2 pi)
    dim0 = 0.5 * (1.0 / 2.0) ** 2 + math.log(2.0) + 0.5 * math.log(2 * math.pi)
    dim1 = 0.5 * (0.5 / 0.5) ** 2 + math.log(0.5) + 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(dec.loss(decoded, obs), torch.tensor([dim0 + dim1]))
    # unit-std decoder: unchanged squared error on the same prediction
    mse = VectorDecoder(feat_dim=5, obs_dim=2, mlp_units=8, mlp_layers=1)
    torch.testing.assert_close(mse.loss(decoded, obs), torch.tensor([1.0 + 0.25]))


def test_vector_decoder_std_floor_and_gradients_reach_the_std_output():
    torch.manual_seed(0)
    dec = VectorDecoder(feat_dim=6, obs_dim=3, mlp_units=8, mlp_layers=1, learned_std=True, min_std=0.3)
    feat = torch.randn(4, 5, 6, requires_grad=True)
    out = dec(feat)
    assert out.batch_size == (4, 5)
    assert out["vector"].shape == out["vector_std"].shape == (4, 5, 3)
    assert out["vector_std"].min() > 0.3
    # a very negative raw output still stays above the floor (softplus > 0)
    with torch.no_grad():
        dec.mlp.net[-1].bias[3:] = -50.0
    assert dec(feat)["vector_std"].min() >= 0.3
    with torch.no_grad():
        dec.mlp.net[-1].bias[3:] = 0.0
    loss = dec.loss(dec(feat), torch.randn(4, 5, 3) * 10)
    assert loss.shape == (4, 5)
    loss.sum().backward()
    last = dec.mlp.net[-1]
    assert last.weight.grad[3:].abs().sum() > 0 and last.bias.grad[3:].abs().sum() > 0  # std rows
    assert last.weight.grad[:3].abs().sum() > 0  # mean rows
    assert feat.grad.abs().sum() > 0


def test_vector_decoder_learns_its_std():
    """NLL training moves the std toward the data's spread in symlog space (learning, not just shapes)."""
    torch.manual_seed(0)
    dec = VectorDecoder(feat_dim=4, obs_dim=2, mlp_units=16, mlp_layers=1, learned_std=True, min_std=0.01)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    feat = torch.zeros(256, 4)  # no information: the best std is the target's spread
    before = dec(feat[:1])["vector_std"][0].detach()  # softplus(0) + min_std ~ 0.70 per dim
    for _ in range(300):
        obs = torch.randn(256, 2) * torch.tensor([0.1, 0.5])  # symlog ~ identity near 0
        loss = dec.loss(dec(feat), obs).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    per_dim = dec(feat[:1])["vector_std"][0]
    target = symlog(torch.randn(100_000, 2) * torch.tensor([0.1, 0.5])).std(0)  # ~[0.093, 0.375]
    torch.testing.assert_close(per_dim, target, atol=0.03, rtol=0.0)
    assert (per_dim < before - 0.3).all()


def test_mean_std_shape_and_error_for_both_decoders():
    vec = VectorDecoder(feat_dim=5, obs_dim=3, mlp_units=8, mlp_layers=1, learned_std=True)
    decoded = TensorDict({"vector": torch.zeros(2, 4, 3),
                          "vector_std": torch.tensor([1.0, 2.0, 6.0]).expand(2, 4, 3)}, [2, 4])
    torch.testing.assert_close(vec.mean_std(decoded), torch.full((2, 4, 1), 3.0))
    img = ImageDecoder(feat_dim=4, cnn_depth=2, learned_std=True)
    std = torch.ones(2, 3, 64, 64)
    std[:, 0] = 4.0  # mean over C, H, W = (4 + 1 + 1) / 3
    out = img.mean_std(TensorDict({"image": torch.zeros(2, 3, 64, 64), "image_std": std}, [2]))
    torch.testing.assert_close(out, torch.full((2, 1), 2.0))
    plain_vec = VectorDecoder(feat_dim=5, obs_dim=3, mlp_units=8, mlp_layers=1)
    with pytest.raises(ValueError, match="agent.learned_std"):
        plain_vec.mean_std(plain_vec(torch.randn(2, 5)))
    plain_img = ImageDecoder(feat_dim=4, cnn_depth=2)
    with pytest.raises(ValueError, match="agent.learned_std"):
        plain_img.mean_std(plain_img(torch.randn(2, 4)))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="image_size"):
        ImageEncoder(cnn_depth=2, image_size=60)
    with pytest.raises(ValueError, match="min_std"):
        ImageDecoder(feat_dim=4, learned_std=True, min_std=0.0)
    with pytest.raises(ValueError, match="mlp_layers"):
        VectorEncoder(obs_dim=3, mlp_units=8, mlp_layers=0)
    with pytest.raises(ValueError, match="min_std must be > 0, got -0.1"):
        VectorDecoder(feat_dim=4, obs_dim=3, mlp_units=8, mlp_layers=1, learned_std=True, min_std=-0.1)
    with pytest.raises(ValueError, match="feat_dim=4"):
        VectorDecoder(feat_dim=4, obs_dim=3, mlp_units=8, mlp_layers=1)(torch.zeros(2, 5))
