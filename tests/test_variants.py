"""The paper's ablation variants (Table 1) and SAGAN self-attention: build, train, save/load, report."""

import numpy as np
import paddle
import pytest

from conftest import batch, build
from extras.checkpoints import ArchitectureMismatch
from extras.evaluation import variant_name
from networks import Discriminator, FixedLIN, GroupNorm, ResnetGenerator, SelfAttention

VARIANTS = {                                   # flags → the paper's Table 1 row
    (): 'U-GAT-IT',
    ('--norm', 'in'): 'w/ IN',
    ('--norm', 'ln'): 'w/ LN',
    ('--norm', 'adain'): 'w/ AdaIN',
    ('--norm', 'gn'): 'w/ GN',
    ('--cam_g', 'False', '--cam_d', 'False'): 'w/o CAM',
    ('--cam_g', 'False'): 'w/o G_CAM',
    ('--cam_d', 'False'): 'w/o D_CAM',
    ('--self_attn', 'gd'): '+ self-attention (G and D)',
}


@pytest.mark.parametrize('flags', list(VARIANTS), ids=[VARIANTS[f] for f in VARIANTS])
def test_variant_builds_trains_and_names_itself(tmp_path, flags):
    """Each variant trains a step with finite losses (a removed CAM's terms are zero), names itself by
    the paper's row, and its checkpoint does not load into the default model."""
    gan = build(tmp_path, *flags)
    assert variant_name(gan.args.norm, gan.args.cam_g, gan.args.cam_d, gan.args.self_attn) == VARIANTS[flags]
    losses = gan.train_step(batch(0), batch(1))
    assert all(np.isfinite(v) for v in losses.values())
    assert (losses['G_cam_loss_A'] > 0) == ('--cam_g' not in flags)
    assert (losses['D_ad_cam_loss_GA'] > 0) == (losses['G_ad_cam_loss_LB'] > 0) == ('--cam_d' not in flags)
    if flags:
        path = str(tmp_path / 'v.pdparams')
        gan.save(path, step=1)
        with pytest.raises(ArchitectureMismatch, match='other network arguments'):
            build(tmp_path).load(path)


def test_decoder_norms_are_the_requested_ones():
    def norms(g):
        return {type(l).__name__ for l in g.sublayers() if isinstance(l, (FixedLIN, GroupNorm))
                or type(l).__name__ in ('adaILN', 'ILN')}
    assert norms(ResnetGenerator(3, 3, 4, 1, 32, light=True)) == {'adaILN', 'ILN'}
    assert norms(ResnetGenerator(3, 3, 4, 1, 32, light=True, norm='gn')) == {'GroupNorm'}
    adain = ResnetGenerator(3, 3, 4, 1, 32, light=True, norm='adain')
    assert adain.UpBlock1_1.norm1.adaptive and not adain.UpBlock2[3].adaptive
    assert float(adain.UpBlock1_1.norm1.mix.numpy().mean()) == 1.0
    ln = ResnetGenerator(3, 3, 4, 1, 32, light=True, norm='ln')
    assert float(ln.UpBlock2[3].mix.numpy().mean()) == 0.0
    assert not hasattr(ln, 'FC') and not hasattr(ln, 'gamma')          # no γ/β MLP without an adaptive norm
    out, cam_logit, heatmap = ResnetGenerator(3, 3, 4, 1, 32, light=True, use_cam=False)(paddle.randn([1, 3, 32, 32]))
    assert out.shape == [1, 3, 32, 32] and cam_logit is None and heatmap is None


def sagan_reference(x, wq, bq, wk, bk, wv, bv, gamma):
    """f = W_f x, g = W_g x, h = W_h x; β_{j,i} = softmax_i(f_iᵀ g_j); o_j = Σ_i β_{j,i} h_i; γ·o + x."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    f = np.einsum('oc,bcn->bon', wq, flat) + bq[None, :, None]
    g = np.einsum('oc,bcn->bon', wk, flat) + bk[None, :, None]
    v = np.einsum('oc,bcn->bon', wv, flat) + bv[None, :, None]
    logits = np.einsum('bki,bkj->bji', f, g)                    # [b, j, i] = f_iᵀ g_j
    beta = np.exp(logits - logits.max(axis=2, keepdims=True))
    beta /= beta.sum(axis=2, keepdims=True)
    o = np.einsum('bji,bci->bcj', beta, v)
    return gamma * o.reshape(b, c, h, w) + x


def test_self_attention_matches_formula():
    rng = np.random.RandomState(0)
    layer = SelfAttention(16)
    x = rng.randn(2, 16, 5, 6).astype(np.float32)
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), x, atol=1e-6)      # γ = 0: the identity
    layer.gamma.set_value(np.array([0.7], np.float32))
    weights = [p.numpy() for p in (layer.query.weight, layer.query.bias, layer.key.weight, layer.key.bias,
                                   layer.value.weight, layer.value.bias)]
    ref = sagan_reference(x.astype(np.float64), weights[0][:, :, 0, 0], weights[1], weights[2][:, :, 0, 0],
                          weights[3], weights[4][:, :, 0, 0], weights[5], 0.7)
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), ref, rtol=1e-4, atol=1e-5)
    assert layer.query.weight.shape[0] == 2                                              # C/8 channels


@pytest.mark.parametrize('n_layers, size, after', [(7, 96, 2), (7, 256, 3), (5, 256, 3)])
def test_discriminator_attention_sits_at_32_or_less(n_layers, size, after):
    """After the first stride-2 block whose map is ≤ 32×32 (96 px: 48, 24 → after block 2;
    256 px: 128, 64, 32 → after block 3)."""
    d = Discriminator(3, 4, n_layers, self_attn=True, img_size=size)
    kinds = [type(l).__name__ for l in d.model]
    assert kinds.count('SelfAttention') == 1
    assert kinds[:kinds.index('SelfAttention')].count('LeakyReLU') == after
    out = d(paddle.randn([1, 3, size, size]))[0]
    assert out.shape[1] == 1


def test_variant_names():
    assert variant_name('adalin', True, True, 'none') == 'U-GAT-IT'
    assert variant_name('gn', True, True, 'none') == 'w/ GN'
    assert variant_name('adalin', False, False, 'none') == 'w/o CAM'
    assert variant_name('in', True, False, 'g') == 'w/ IN w/o D_CAM + self-attention (G)'
