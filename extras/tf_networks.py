"""The authors' TensorFlow architecture (taki0112/UGATIT, ops.py and UGATIT.py at d508e8f), built from
networks.py's pieces, to run and fine-tune their released selfie2anime model exactly (``--arch tf``).

The paper's model either way; what the TF code does differently from the PyTorch port:
* every convolution has a bias; instance norms (encoder, residual blocks) have learned β, γ;
* stride-2 3×3 convolutions pad (top 1, bottom 0) and the discriminators' stride-1 4×4 ones
  (``conv_last``, ``D_logit``) pad (1, 2), so those keep the map size (ops.conv);
* CAM: one ``CAM_logit`` FC with a bias, shared by GAP and GMP, whose features are weighted by
  (w + bias) (ops.fully_connected_with_w); in the discriminators w is spectrally normalised;
* the γ/β MLP has biases and, in the full model, flattens the bottleneck in NHWC order;
* AdaLIN/LIN use biased variances (tf.nn.moments); AdaLIN's ρ starts at 1.0 and, with
  "smoothing", enters as clip(ρ − 0.1, 0, 1); ρ is clipped to [0, 1] after every update;
* spectral norm stores only u [1, out] and does one power iteration per session run: every
  application in a run reads the same u (``advance_power_iterations`` ends a run here);
* L2 regularisation 1e-4·Σw²/2 on kernels only, and tf.train.AdamOptimizer's ε (``TFAdam``);
* initialisation N(0, 0.02) for kernels, zeros for biases, N(0, 1) for u.
Sub-layers and parameters are named after the TF variables (``conv_0.kernel`` ↔ ``conv_0/conv2d/kernel``,
see extras/convert.py); kernels are stored in Paddle's layout ([out, in, kh, kw]).
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from networks import NearestUpsample2x, ReflectionPad2d, instance_layer_norm

_NORMAL = nn.initializer.Normal(0.0, 0.02)


def _kernel(layer: nn.Layer, shape: list) -> paddle.Tensor:
    return layer.create_parameter(shape, default_initializer=_NORMAL)


def _zeros(layer: nn.Layer, shape: list) -> paddle.Tensor:
    return layer.create_parameter(shape, default_initializer=nn.initializer.Constant(0.0))


def _l2_normalize(x: paddle.Tensor) -> paddle.Tensor:
    """tf.nn.l2_normalize: x / sqrt(max(Σx², 1e-12))."""
    return x * paddle.rsqrt(paddle.clip((x * x).sum(), min=1e-12))


class TFSpectralNorm(nn.Layer):
    """ops.spectral_norm: W / σ(W), σ from one power iteration of the stored u.

    With W as a [K, out] matrix: v = ‖u Wᵀ‖⁻¹ u Wᵀ, û = ‖v W‖⁻¹ v W, σ = (v W) ûᵀ (u, v held constant).
    Every call reads the stored u and keeps the û it computes, which ``advance`` stores: between two
    ``advance`` calls (one TF session run) all applications see the same σ. The rows of our [K, out]
    matrix come in another order than TF's (in, kh, kw rather than kh, kw, in): σ and û do not depend on it.
    """

    def __init__(self, out: int):
        super().__init__()
        self.register_buffer('u', paddle.normal(shape=[1, out]))
        self.u_hat = None

    def forward(self, matrix: paddle.Tensor) -> paddle.Tensor:
        """σ of ``matrix`` [K, out]."""
        with paddle.no_grad():
            v = _l2_normalize(paddle.matmul(self.u, matrix, transpose_y=True))
        vw = paddle.matmul(v, matrix)
        self.u_hat = _l2_normalize(vw.detach())
        return paddle.matmul(vw, self.u_hat, transpose_y=True).reshape([])

    def advance(self) -> None:
        if self.u_hat is not None:
            self.u.set_value(self.u_hat)
            self.u_hat = None


def tf_padding(kernel: int, stride: int, pad: int) -> tuple[int, int, int, int]:
    """ops.conv's (left, right, top, bottom): ``pad`` on each side when (kernel − stride) is even, else
    ``pad`` before and (kernel − stride − pad) after."""
    after = pad if (kernel - stride) % 2 == 0 else kernel - stride - pad
    return pad, after, pad, after


class TFConv(nn.Layer):
    """ops.conv: reflection padding as ``tf_padding``, a VALID convolution with bias, optionally
    spectrally normalised."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, pad: int = 0, sn: bool = False):
        super().__init__()
        self.stride = stride
        self.pad = ReflectionPad2d(tf_padding(kernel, stride, pad)) if pad else None
        self.kernel = _kernel(self, [out_ch, in_ch, kernel, kernel])
        self.bias = _zeros(self, [out_ch])
        self.spectral_norm = TFSpectralNorm(out_ch) if sn else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.pad is not None:
            x = self.pad(x)
        weight = self.kernel
        if self.spectral_norm is not None:
            weight = weight / self.spectral_norm(weight.reshape([weight.shape[0], -1]).t())
        return F.conv2d(x, weight, self.bias, stride=self.stride)


class TFDense(nn.Layer):
    """tf.layers.dense: x·kernel + bias (kernel [in, out], Paddle's Linear layout too)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.kernel = _kernel(self, [in_features, out_features])
        self.bias = _zeros(self, [out_features])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.matmul(x, self.kernel) + self.bias


class TFInstanceNorm(nn.Layer):
    """contrib's instance_norm: (x − μ_I)/sqrt(σ²_I + 1e-5)·γ + β, biased variance, learned β, γ [C]."""

    def __init__(self, channels: int):
        super().__init__()
        self.beta = _zeros(self, [channels])
        self.gamma = self.create_parameter([channels], default_initializer=nn.initializer.Constant(1.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.instance_norm(x, weight=self.gamma, bias=self.beta, eps=1e-5)


class TFAdaILN(nn.Layer):
    """ops.adaptive_instance_layer_norm: γ·(ρ·â_I + (1−ρ)·â_L) + β, biased variances, ρ [C] from 1.0;
    with smoothing ρ enters as clip(ρ − 0.1, 0, 1)."""

    def __init__(self, channels: int, smoothing: bool):
        super().__init__()
        self.smoothing = smoothing
        self.rho = self.create_parameter([channels], default_initializer=nn.initializer.Constant(1.0))

    def forward(self, x: paddle.Tensor, gamma: paddle.Tensor, beta: paddle.Tensor) -> paddle.Tensor:
        rho = paddle.clip(self.rho - 0.1, 0.0, 1.0) if self.smoothing else self.rho
        return instance_layer_norm(x, rho.reshape([1, -1, 1, 1]), gamma.unsqueeze([2, 3]), beta.unsqueeze([2, 3]),
                                   unbiased=False)


class TFLIN(nn.Layer):
    """ops.layer_instance_norm: γ·(ρ·â_I + (1−ρ)·â_L) + β, biased variances, ρ [C] from 0, γ 1, β 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.rho = _zeros(self, [channels])
        self.gamma = self.create_parameter([channels], default_initializer=nn.initializer.Constant(1.0))
        self.beta = _zeros(self, [channels])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return instance_layer_norm(x, self.rho.reshape([1, -1, 1, 1]), self.gamma.reshape([1, -1, 1, 1]),
                                   self.beta.reshape([1, -1, 1, 1]), unbiased=False)


class TFCAM(nn.Layer):
    """The CAM block: one ``CAM_logit`` FC (kernel [C, 1], bias [1]) for GAP and GMP; the features are
    weighted by (w + bias) (ops.fully_connected_with_w), w spectrally normalised in the discriminators."""

    def __init__(self, channels: int, sn: bool = False):
        super().__init__()
        self.kernel = _kernel(self, [channels, 1])
        self.bias = _zeros(self, [1])
        self.spectral_norm = TFSpectralNorm(1) if sn else None

    def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """x [B, C, H, W] → ([x ⊙ w_gap, x ⊙ w_gmp] [B, 2C, H, W], cam_logit [B, 2])."""
        w = self.kernel if self.spectral_norm is None else self.kernel / self.spectral_norm(self.kernel)
        gap = paddle.matmul(F.adaptive_avg_pool2d(x, 1).flatten(1), w) + self.bias
        gmp = paddle.matmul(F.max_pool2d(x, kernel_size=list(x.shape[2:])).flatten(1), w) + self.bias
        weighted = x * (w + self.bias).reshape([1, -1, 1, 1])                # GAP and GMP share the FC
        return paddle.concat([weighted, weighted], axis=1), paddle.concat([gap, gmp], axis=1)


class TFResBlock(nn.Layer):
    """ops.resblock / ops.adaptive_ins_layer_resblock: x + [conv, norm, ReLU, conv, norm](x)."""

    def __init__(self, channels: int, smoothing: bool | None = None):
        super().__init__()
        self.adaptive = smoothing is not None
        for name in ('res1', 'res2'):
            half = nn.Layer()
            half.conv_0 = TFConv(channels, channels, 3, 1, 1)
            if self.adaptive:
                half.instance_layer_norm = TFAdaILN(channels, smoothing)
            else:
                half.instance_norm = TFInstanceNorm(channels)
            setattr(self, name, half)

    def _half(self, half: nn.Layer, x, gamma, beta):
        x = half.conv_0(x)
        return half.instance_layer_norm(x, gamma, beta) if self.adaptive else half.instance_norm(x)

    def forward(self, x: paddle.Tensor, gamma: paddle.Tensor = None, beta: paddle.Tensor = None) -> paddle.Tensor:
        return x + self._half(self.res2, F.relu(self._half(self.res1, x, gamma, beta)), gamma, beta)


class TFResnetGenerator(nn.Layer):
    """UGATIT.generator of the TF code: encoder, CAM, γ/β MLP, AdaLIN decoder (see the module docstring).

    Returns ``(out [B, img_ch, S, S], cam_logit [B, 2], heatmap [B, 1, S/4, S/4])`` like ResnetGenerator.
    The TF MLP is ch·n_res wide and must match the 4·ch bottleneck channels: n_res is 4.
    """

    def __init__(self, img_ch: int, ch: int, n_res: int, img_size: int, light: bool, smoothing: bool):
        super().__init__()
        if n_res != 4:
            raise ValueError(f'the TF architecture needs --n_res 4 (its MLP is ch·n_res wide), got {n_res}')
        self.n_res, self.light, dim = n_res, light, 4 * ch
        self.conv, self.ins_norm = TFConv(img_ch, ch, 7, 1, 3), TFInstanceNorm(ch)
        self.conv_0, self.ins_norm_0 = TFConv(ch, 2 * ch, 3, 2, 1), TFInstanceNorm(2 * ch)
        self.conv_1, self.ins_norm_1 = TFConv(2 * ch, dim, 3, 2, 1), TFInstanceNorm(dim)
        for i in range(n_res):
            setattr(self, f'resblock_{i}', TFResBlock(dim))
        self.CAM_logit = TFCAM(dim)
        self.conv_1x1 = TFConv(2 * dim, dim, 1)
        self.MLP = nn.Layer()
        self.MLP.linear_0 = TFDense(dim if light else (img_size // 4) ** 2 * dim, dim)
        self.MLP.linear_1, self.MLP.gamma, self.MLP.beta = TFDense(dim, dim), TFDense(dim, dim), TFDense(dim, dim)
        for i in range(n_res):
            setattr(self, f'adaptive_resblock{i}', TFResBlock(dim, smoothing))
        self.up = NearestUpsample2x()
        self.up_conv_0, self.layer_ins_norm_0 = TFConv(dim, 2 * ch, 3, 1, 1), TFLIN(2 * ch)
        self.up_conv_1, self.layer_ins_norm_1 = TFConv(2 * ch, ch, 3, 1, 1), TFLIN(ch)
        self.G_logit = TFConv(ch, img_ch, 7, 1, 3)

    def forward(self, x: paddle.Tensor):
        x = F.relu(self.ins_norm(self.conv(x)))
        x = F.relu(self.ins_norm_0(self.conv_0(x)))
        x = F.relu(self.ins_norm_1(self.conv_1(x)))                      # [B, 4ch, S/4, S/4]
        for i in range(self.n_res):
            x = getattr(self, f'resblock_{i}')(x)
        x, cam_logit = self.CAM_logit(x)
        x = F.relu(self.conv_1x1(x))
        heatmap = x.sum(axis=1, keepdim=True)
        h = F.adaptive_avg_pool2d(x, 1).flatten(1) if self.light else x.transpose([0, 2, 3, 1]).flatten(1)  # NHWC
        h = F.relu(self.MLP.linear_1(F.relu(self.MLP.linear_0(h))))
        gamma, beta = self.MLP.gamma(h), self.MLP.beta(h)
        for i in range(self.n_res):
            x = getattr(self, f'adaptive_resblock{i}')(x, gamma, beta)
        x = F.relu(self.layer_ins_norm_0(self.up_conv_0(self.up(x))))
        x = F.relu(self.layer_ins_norm_1(self.up_conv_1(self.up(x))))
        return paddle.tanh(self.G_logit(x)), cam_logit, heatmap


class TFDiscriminator(nn.Layer):
    """UGATIT.discriminator_global / _local of the TF code: n_dis − 1 (global) or n_dis − 3 (local)
    stride-2 4×4 convolutions, ``conv_last`` (stride 1, keeps the size), CAM, ``conv_1x1`` and ``D_logit``;
    spectral norm everywhere but ``conv_1x1``; LeakyReLU 0.2.
    Returns ``(logit [B, 1, h, w], cam_logit [B, 2], heatmap [B, 1, h, w])``.
    """

    def __init__(self, img_ch: int, ch: int, n_dis: int, local: bool):
        super().__init__()
        self.n_down = n_dis - 3 if local else n_dis - 1
        channels = [img_ch] + [ch * 2 ** i for i in range(self.n_down)]
        for i in range(self.n_down):
            setattr(self, f'conv_{i}', TFConv(channels[i], channels[i + 1], 4, 2, 1, sn=True))
        dim = 2 * channels[-1]
        self.conv_last = TFConv(channels[-1], dim, 4, 1, 1, sn=True)
        self.CAM_logit = TFCAM(dim, sn=True)
        self.conv_1x1 = TFConv(2 * dim, dim, 1)
        self.D_logit = TFConv(dim, 1, 4, 1, 1, sn=True)

    def forward(self, x: paddle.Tensor):
        for i in range(self.n_down):
            x = F.leaky_relu(getattr(self, f'conv_{i}')(x), 0.2)
        x = F.leaky_relu(self.conv_last(x), 0.2)
        x, cam_logit = self.CAM_logit(x)
        x = F.leaky_relu(self.conv_1x1(x), 0.2)
        return self.D_logit(x), cam_logit, x.sum(axis=1, keepdim=True)


def build_tf_network(name: str, arch: dict) -> nn.Layer:
    """One of the six networks (``networks.NETWORKS``) as the TF code builds it, for an architecture dict."""
    if name.startswith('gen'):
        return TFResnetGenerator(arch['img_ch'], arch['ch'], arch['n_res'], arch['img_size'], arch['light'],
                                 arch['smoothing'])
    return TFDiscriminator(arch['img_ch'], arch['ch'], arch['n_dis'], local=name.startswith('disL'))


# --------------------------------------------------------------------------- #
# Training as the TF code does
# --------------------------------------------------------------------------- #
def spectral_norms(networks) -> list[TFSpectralNorm]:
    """The TF spectral norms of ``networks`` (none in the PyTorch architecture)."""
    return [layer for network in networks for layer in network.sublayers() if isinstance(layer, TFSpectralNorm)]


def advance_power_iterations(layers: list[TFSpectralNorm]) -> None:
    """End a TF "session run": every spectral norm stores the u of its one power iteration."""
    for layer in layers:
        layer.advance()


def decay_kernels(networks, coefficient: float) -> None:
    """ops' ``l2_regularizer``: coefficient·Σw²/2 on every kernel (not biases, norms, ρ or u), whose
    gradient coefficient·w is what Paddle's L2Decay adds."""
    for network in networks:
        for name, param in network.named_parameters():
            if name.endswith('kernel'):
                param.regularizer = paddle.regularizer.L2Decay(coefficient) if coefficient else None


class TFAdam(paddle.optimizer.Adam):
    """tf.train.AdamOptimizer: var −= lr·√(1−β2^t)/(1−β1^t) · m / (√v + ε), with ε added to √v rather
    than to the bias-corrected √v̂ as Paddle's (and torch's) Adam does; the same update as Paddle's with
    ε/√(1−β2^t), t read from each parameter's β2^t accumulator. Identical once β2^t ≈ 0 (t ≳ 20,000)."""

    def __init__(self, *args, epsilon: float = 1e-8, **kwargs):
        super().__init__(*args, epsilon=epsilon, **kwargs)
        self._tf_epsilon = epsilon

    def _append_optimize_op(self, block, param_and_grad):
        beta2_pow = float(self._get_accumulator_master(self._beta2_pow_acc_str, param_and_grad[0]).reshape([]))
        self._epsilon = self._tf_epsilon / math.sqrt(1.0 - beta2_pow)
        return super()._append_optimize_op(block, param_and_grad)
