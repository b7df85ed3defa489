"""The networks: shapes, parameter counts, the AdaLIN/LIN formula, ρ clipping, spectral norm."""
import numpy as np
import paddle
import pytest

import networks
from networks import ILN, Discriminator, ReflectionPad2d, ResnetGenerator, RhoClipper, adaILN, min_image_size


def n_params(layer) -> int:
    return sum(int(np.prod(p.shape)) for p in layer.parameters())


# --------------------------------------------------------------------------- #
# Shapes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize('pad, h, w', [(1, 2, 2), (1, 2, 5), (3, 4, 4), (3, 7, 9), ((1, 2, 1, 2), 3, 3),
                                       ((1, 0, 1, 0), 4, 5), ((0, 2, 3, 1), 5, 4)])
def test_reflection_pad_equals_numpy_reflect(pad, h, w):
    """Values and gradient of torch's ReflectionPad2d (an int or left, right, top, bottom), down to the
    smallest map (pad + 1 pixels)."""
    left, right, top, bottom = (pad,) * 4 if isinstance(pad, int) else pad
    x = np.random.RandomState(0).randn(2, 3, h, w).astype(np.float32)
    expected = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode='reflect')
    t = paddle.to_tensor(x, stop_gradient=False)
    y = ReflectionPad2d(pad)(t)
    np.testing.assert_array_equal(y.numpy(), expected)
    weight = np.random.RandomState(1).randn(*expected.shape).astype(np.float32)
    (y * paddle.to_tensor(weight)).sum().backward()
    reference = paddle.to_tensor(x, stop_gradient=False)
    (paddle.nn.functional.pad(reference, [left, right, top, bottom], mode='reflect')
     * paddle.to_tensor(weight)).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), reference.grad.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match='larger --img_size'):
        ReflectionPad2d(pad)(paddle.zeros([1, 1, max(top, bottom), max(left, right) + 1]))


@pytest.mark.parametrize('light', [True, False])
@pytest.mark.parametrize('size', [16, 32, 96])
def test_generator_shapes(size, light):
    g = ResnetGenerator(3, 3, ngf=4, n_blocks=2, img_size=size, light=light)
    out, cam_logit, heatmap = g(paddle.randn([2, 3, size, size]))
    assert out.shape == [2, 3, size, size]
    assert cam_logit.shape == [2, 2]
    assert heatmap.shape == [2, 1, size // 4, size // 4]
    assert float(out.abs().max()) <= 1.0          # tanh output


@pytest.mark.parametrize('n_layers, size, patch', [(7, 96, 1), (7, 128, 2), (7, 256, 6),
                                                   (5, 96, 10), (5, 256, 30)])
def test_discriminator_shapes(n_layers, size, patch):
    d = Discriminator(3, ndf=2, n_layers=n_layers)
    out, cam_logit, heatmap = d(paddle.randn([2, 3, size, size]))
    assert out.shape == [2, 1, patch, patch]
    assert cam_logit.shape == [2, 2]
    assert heatmap.shape == [2, 1, patch + 1, patch + 1]


def test_min_image_size_is_the_smallest_accepted():
    assert min_image_size(7) == 96 and min_image_size(5) == 24
    d = Discriminator(3, ndf=2, n_layers=7)
    d(paddle.randn([1, 3, 96, 96]))                 # accepted
    with pytest.raises(Exception):
        d(paddle.randn([1, 3, 92, 92]))             # the next multiple of 4 below is not


def test_full_generator_is_tied_to_img_size():
    g = ResnetGenerator(3, 3, ngf=2, n_blocks=1, img_size=32, light=False)
    with pytest.raises(Exception):
        g(paddle.randn([1, 3, 64, 64]))
    light = ResnetGenerator(3, 3, ngf=2, n_blocks=1, img_size=32, light=True)
    assert light(paddle.randn([1, 3, 64, 64]))[0].shape == [1, 3, 64, 64]


# --------------------------------------------------------------------------- #
# Parameter counts of the official configuration (256 px, ch 64, n_res 4)
# --------------------------------------------------------------------------- #
def test_parameter_counts_match_official():
    """Counts of the official PyTorch networks, computed from their layer definitions."""
    assert n_params(ResnetGenerator(3, 3, 64, 4, 256, light=True)) == 10_589_888
    assert n_params(Discriminator(3, 64, 7)) == 53_130_176
    assert n_params(Discriminator(3, 64, 5)) == 3_290_560
    full = ResnetGenerator(3, 3, 64, 4, 256, light=False)
    assert n_params(full) == 10_589_888 - 256 * 256 + 64 * 64 * 256 * 256   # FC.0 sees the whole bottleneck
    assert round(n_params(full) / 1e6, 1) == 279.0


def test_parameter_tensors_match_official_layout():
    """No affine InstanceNorm, no stray biases: the tensor count of the official networks."""
    g = ResnetGenerator(3, 3, 8, 4, 96, light=True)
    # 3 encoder convs + 4·2 res convs + gap/gmp fc + conv1x1 (w, b) + 2 FC + gamma + beta
    # + 4 blocks·(2 convs + 2 rho) + 2·(conv + ILN rho/gamma/beta) + last conv
    assert len(g.parameters()) == 3 + 8 + 2 + 2 + 2 + 2 + 16 + 8 + 1
    d = Discriminator(3, 8, 7)
    # 6 SN convs with bias (2 each) + 2 SN fc + conv1x1 (w, b) + final SN conv without bias
    assert len(d.parameters()) == 12 + 2 + 2 + 1


def test_init_matches_torch_default():
    """U(−1/√fan_in, 1/√fan_in) as torch's default init: std = bound/√3."""
    paddle.seed(0)
    g = ResnetGenerator(3, 3, 16, 1, 32, light=True)
    w = g.DownBlock[5].weight.numpy()                       # 16 → 32 channels, 3×3
    bound = 1 / np.sqrt(16 * 9)
    assert np.abs(w).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    b = g.conv1x1.bias.numpy()
    assert np.abs(b).max() <= 1 / np.sqrt(128) and np.abs(b).max() > 0


# --------------------------------------------------------------------------- #
# AdaLIN / LIN against a numpy reference of the formula
# --------------------------------------------------------------------------- #
def lin_reference(x, rho, gamma, beta, eps=1e-5, ddof=1):
    """γ·(ρ·â_I + (1−ρ)·â_L) + β in float64, with unbiased (ddof 1, PyTorch code) or biased (ddof 0,
    TF code) variances."""
    x = x.astype(np.float64)
    in_mean = x.mean(axis=(2, 3), keepdims=True)
    in_var = x.var(axis=(2, 3), keepdims=True, ddof=ddof)
    ln_mean = x.mean(axis=(1, 2, 3), keepdims=True)
    ln_var = x.var(axis=(1, 2, 3), keepdims=True, ddof=ddof)
    a_in = (x - in_mean) / np.sqrt(in_var + eps)
    a_ln = (x - ln_mean) / np.sqrt(ln_var + eps)
    return gamma * (rho * a_in + (1 - rho) * a_ln) + beta


def test_adailn_matches_formula():
    rng = np.random.RandomState(0)
    x = rng.randn(2, 5, 3, 4).astype('float32') * 3 + 1      # 12 positions: n−1 vs n is 4%
    gamma, beta = rng.randn(2, 5).astype('float32'), rng.randn(2, 5).astype('float32')
    layer = adaILN(5)
    rho = rng.rand(1, 5, 1, 1).astype('float32')
    layer.rho.set_value(rho)
    out = layer(paddle.to_tensor(x), paddle.to_tensor(gamma), paddle.to_tensor(beta)).numpy()
    ref = lin_reference(x, rho, gamma[:, :, None, None], beta[:, :, None, None])
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('norm', ['fused', 'formula'])
@pytest.mark.parametrize('unbiased', [True, False])
def test_both_implementations_match_the_formula_with_either_variance(norm, unbiased):
    """instance_layer_norm (what the layers run) and instance_layer_norm_formula (the paper's eq. 1
    written out) against float64, with the PyTorch code's unbiased and the TF code's biased variance;
    the two variances differ by 4% here, so each reference tells them apart."""
    rng = np.random.RandomState(3)
    x = rng.randn(2, 5, 3, 4).astype('float32') * 3 + 1
    rho, gamma, beta = (rng.rand(1, 5, 1, 1).astype('float32'), rng.randn(2, 5, 1, 1).astype('float32'),
                        rng.randn(2, 5, 1, 1).astype('float32'))
    function = networks.instance_layer_norm if norm == 'fused' else networks.instance_layer_norm_formula
    out = function(*(paddle.to_tensor(v) for v in (x, rho, gamma, beta)), unbiased=unbiased).numpy()
    np.testing.assert_allclose(out, lin_reference(x, rho, gamma, beta, ddof=int(unbiased)), rtol=1e-4, atol=1e-4)


def test_iln_matches_formula():
    rng = np.random.RandomState(1)
    x = rng.randn(3, 4, 2, 3).astype('float32') + 5             # an offset mean: the algebra must not cancel
    layer = ILN(4)
    rho, gamma, beta = (rng.rand(1, 4, 1, 1).astype('float32'), rng.randn(1, 4, 1, 1).astype('float32'),
                        rng.randn(1, 4, 1, 1).astype('float32'))
    layer.rho.set_value(rho)
    layer.gamma.set_value(gamma)
    layer.beta.set_value(beta)
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), lin_reference(x, rho, gamma, beta),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('norm', ['fused', 'formula'])
def test_lin_gradients_match_the_formula(norm, monkeypatch):
    """The backward of both implementations equals the gradient of the written-out formula (float64)."""
    if norm == 'formula':
        monkeypatch.setattr(networks, 'instance_layer_norm', networks.instance_layer_norm_formula)
    rng = np.random.RandomState(2)
    x = rng.randn(2, 3, 4, 5)
    layer = ILN(3)
    layer.rho.set_value(np.array([0.2, 0.5, 0.9], np.float32).reshape(1, 3, 1, 1))
    layer.gamma.set_value(rng.randn(1, 3, 1, 1).astype(np.float32))
    weights = rng.randn(2, 3, 4, 5)
    xt = paddle.to_tensor(x.astype(np.float32), stop_gradient=False)
    (layer(xt) * paddle.to_tensor(weights.astype(np.float32))).sum().backward()

    def loss(x64):
        return (lin_reference(x64, layer.rho.numpy().astype(np.float64), layer.gamma.numpy().astype(np.float64),
                              0.0) * weights).sum()
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):                          # central differences in float64
        step = np.zeros_like(x)
        step[i] = 1e-6
        numeric[i] = (loss(x + step) - loss(x - step)) / 2e-6
    np.testing.assert_allclose(xt.grad.numpy(), numeric, rtol=1e-3, atol=1e-3)


def test_norm_initial_values():
    a, i = adaILN(6), ILN(6)
    np.testing.assert_array_equal(a.rho.numpy(), np.full([1, 6, 1, 1], 0.9, np.float32))
    np.testing.assert_array_equal(i.rho.numpy(), np.zeros([1, 6, 1, 1], np.float32))
    np.testing.assert_array_equal(i.gamma.numpy(), np.ones([1, 6, 1, 1], np.float32))
    np.testing.assert_array_equal(i.beta.numpy(), np.zeros([1, 6, 1, 1], np.float32))


def test_rho_clipper_clamps_every_norm_layer():
    g = ResnetGenerator(3, 3, 4, 2, 16, light=True)
    values = np.array([-0.5, 0.3, 1.7, 1.0], np.float32).reshape(1, 4, 1, 1)
    norms = [l for l in g.sublayers() if isinstance(l, (adaILN, ILN))]
    assert len(norms) == 2 * 2 + 2
    for layer in norms:
        layer.rho.set_value(np.resize(values, layer.rho.shape).astype(np.float32))
    g.apply(RhoClipper(0, 1))
    for layer in norms:
        rho = layer.rho.numpy().ravel()
        np.testing.assert_array_equal(rho, np.clip(np.resize(values, rho.shape), 0, 1))
    with pytest.raises(ValueError, match='min < max'):
        RhoClipper(1, 0)


# --------------------------------------------------------------------------- #
# Spectral norm exactly where the official code puts it
# --------------------------------------------------------------------------- #
def spectral_norm_layers(net):
    return sorted(name for name, layer in net.named_sublayers() if hasattr(layer, 'weight_orig'))


@pytest.mark.parametrize('n_layers', [5, 7])
def test_spectral_norm_on_exactly_the_official_layers(n_layers):
    d = Discriminator(3, 4, n_layers)
    convs = [f'model.{3 * i + 1}' for i in range(n_layers - 1)]        # every [pad, conv, lrelu] block
    assert spectral_norm_layers(d) == sorted(convs + ['gap_fc', 'gmp_fc', 'conv'])
    assert not hasattr(d.conv1x1, 'weight_orig')
    state = d.state_dict()
    assert 'gap_fc.weight_u' in state and 'gap_fc.weight_v' in state and 'gap_fc.weight' not in state
    assert spectral_norm_layers(ResnetGenerator(3, 3, 4, 1, 16, light=True)) == []


def test_discriminator_cam_uses_unnormalised_weight():
    """The CAM reweighting uses weight_orig (as the official list(fc.parameters())[0])."""
    d = Discriminator(3, 2, 5)
    d.eval()
    x = paddle.randn([1, 3, 32, 32])
    _, logit, heatmap = (t.numpy() for t in d(x))
    with paddle.no_grad():
        d.gap_fc.weight_orig.set_value(d.gap_fc.weight_orig * 10)       # σ scales by 10 too
    _, logit_scaled, heatmap_scaled = (t.numpy() for t in d(x))
    np.testing.assert_allclose(logit_scaled, logit, rtol=1e-4, atol=1e-5)   # logit: normalised weight
    assert not np.allclose(heatmap_scaled, heatmap, rtol=1e-2)               # features: the raw weight
