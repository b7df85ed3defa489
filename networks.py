"""U-GAT-IT networks in paddle.nn, layer for layer as the official PyTorch code.

Official source: znxlwm/UGATIT-pytorch, networks.py at HEAD (b8c4251). Class names,
constructor arguments, sub-layer names and the order of layers inside each
``nn.Sequential`` are the official ones, so that state dicts line up key by key
(see convert.py) and a reader can hold the two files side by side.

Layers only: no I/O, no printing.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

# The six networks of U-GAT-IT, in the official order of construction (same random initialisation).
NETWORKS = ('genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB')
GENERATORS, DISCRIMINATORS = NETWORKS[:2], NETWORKS[2:]


# --------------------------------------------------------------------------- #
# Initialisation
# --------------------------------------------------------------------------- #
def init_like_torch(layer: nn.Layer) -> None:
    """Initialise a Conv2D/Linear as PyTorch does by default (the official code sets no init).

    torch uses kaiming_uniform(a=sqrt(5)) for weights and U(-b, b) for biases, which both
    reduce to U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Paddle's defaults differ (Kaiming normal
    for convolutions, Xavier for Linear, zero biases), which changes the training dynamics.
    fan_in is in_channels * kh * kw for a convolution and in_features for a Linear (whose
    Paddle weight is stored [in, out]).
    """
    weight = layer.weight
    if isinstance(layer, nn.Linear):
        fan_in = weight.shape[0]
    else:
        fan_in = int(math.prod(weight.shape[1:]))
    bound = 1.0 / math.sqrt(fan_in)
    uniform = nn.initializer.Uniform(-bound, bound)
    uniform(weight)
    if getattr(layer, 'bias', None) is not None:
        uniform(layer.bias)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Conv2D:
    """A padding-free convolution (the padding is an explicit reflection pad before it)."""
    conv = nn.Conv2D(in_ch, out_ch, kernel, stride=stride, padding=0, bias_attr=None if bias else False)
    init_like_torch(conv)
    return conv


def _linear(in_features: int, out_features: int, bias: bool = False) -> nn.Linear:
    linear = nn.Linear(in_features, out_features, bias_attr=None if bias else False)
    init_like_torch(linear)
    return linear


def _spectral_norm(layer: nn.Layer) -> nn.Layer:
    """Spectral normalisation with one power iteration per training-mode forward (as torch).

    The weight becomes the parameter ``weight_orig``; ``weight_u``/``weight_v`` are buffers.
    """
    return nn.utils.spectral_norm(layer)


class ReflectionPad2d(nn.Layer):
    """torch's ``nn.ReflectionPad2d(padding)``: mirror rows and columns at each border, edge excluded;
    ``padding`` is one int or (left, right, top, bottom), as in torch.

    Built from reversed slices and a concatenation: exactly ``nn.Pad2D(padding, mode='reflect')``, but
    faster forward and backward than Paddle's pad3d kernel on the CPU, where the generator pads 14
    times per forward (docs/performance.md).
    """

    def __init__(self, padding: int | tuple[int, int, int, int]):
        super().__init__()
        self.padding = (padding,) * 4 if isinstance(padding, int) else tuple(padding)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        left, right, top, bottom = self.padding
        if x.shape[2] <= max(top, bottom) or x.shape[3] <= max(left, right):
            raise ValueError(f'reflection padding of {max(self.padding)} needs maps larger than that, got '
                             f'{list(x.shape[2:])}: use a larger --img_size')
        return _mirror(_mirror(x, top, bottom, axis=2), left, right, axis=3)


def _mirror(x: paddle.Tensor, before: int, after: int, axis: int) -> paddle.Tensor:
    """x with ``before``/``after`` rows (axis 2) or columns (axis 3) mirrored on at each end."""
    n = x.shape[axis]
    index = [slice(None)] * 4
    parts = []
    if before:
        index[axis] = slice(before, 0, -1)
        parts.append(x[tuple(index)])
    parts.append(x)
    if after:
        index[axis] = slice(n - 2, _reversed_stop(n - after - 2), -1)
        parts.append(x[tuple(index)])
    return paddle.concat(parts, axis=axis) if len(parts) > 1 else x


def _reversed_stop(stop: int):
    """The stop of a reversed slice that ends at index 0 inclusive: None, not -1 (which would mean
    the last element; Paddle 2.6 also returns nothing for a negative stop before the start)."""
    return None if stop < 0 else stop


def _instance_norm(num_features: int) -> nn.InstanceNorm2D:
    """torch's ``nn.InstanceNorm2d(C)``: biased variance, eps 1e-5, no affine parameters."""
    return nn.InstanceNorm2D(num_features, epsilon=1e-5, weight_attr=False, bias_attr=False)


# --------------------------------------------------------------------------- #
# Normalisation: AdaLIN and LIN (paper eq. 1)
# --------------------------------------------------------------------------- #
def instance_layer_norm_formula(x: paddle.Tensor, rho: paddle.Tensor, gamma: paddle.Tensor,
                                beta: paddle.Tensor, eps: float = 1e-5, unbiased: bool = True) -> paddle.Tensor:
    """AdaLIN / LIN as the paper writes it (eq. 1):

        â_I = (a − μ_I) / sqrt(σ²_I + ε)        statistics per sample and channel (over H, W)
        â_L = (a − μ_L) / sqrt(σ²_L + ε)        statistics per sample (over C, H, W)
        out = γ · (ρ·â_I + (1−ρ)·â_L) + β

    Variances unbiased as ``torch.var`` in the official PyTorch code (biased, ``tf.nn.moments``,
    in the authors' TensorFlow code). The layer statistics are reduced over H, W, then over C:
    Paddle's float32 CPU reduction over a whole 64×256×256 map at once is 3e-3 off (torch: 4e-8).
    The layers run ``instance_layer_norm``, the same numbers in fewer passes.
    """
    x = x.astype('float32')                                     # statistics in float32 under AMP
    m = x.shape[2] * x.shape[3]
    n = x.shape[1] * m
    in_mean = x.mean(axis=[2, 3], keepdim=True)
    in_var = ((x - in_mean) ** 2).mean(axis=[2, 3], keepdim=True) * (m / (m - 1) if unbiased else 1.0)
    out_in = (x - in_mean) / paddle.sqrt(in_var + eps)
    ln_mean = in_mean.mean(axis=1, keepdim=True)
    ln_var = ((x - ln_mean) ** 2).mean(axis=[2, 3], keepdim=True).mean(axis=1, keepdim=True)
    ln_var = ln_var * (n / (n - 1) if unbiased else 1.0)
    out_ln = (x - ln_mean) / paddle.sqrt(ln_var + eps)
    return gamma * (rho * out_in + (1 - rho) * out_ln) + beta


def _spatial_mean(x: paddle.Tensor) -> paddle.Tensor:
    """Mean over H, W as [B, C, 1, 1] (an average pool: same value, much faster backward on CPU)."""
    return F.adaptive_avg_pool2d(x, 1)


def _channel_mean(x: paddle.Tensor) -> paddle.Tensor:
    """Mean over the channels of a [B, C, 1, 1] tensor, as a sum scaled by 1/C (Paddle Inference's
    oneDNN pass prints a debug line for every reduce_mean it meets; reduce_sum passes quietly)."""
    return x.sum(axis=1, keepdim=True) * (1.0 / x.shape[1])


def instance_layer_norm(x: paddle.Tensor, rho: paddle.Tensor, gamma: paddle.Tensor,
                        beta: paddle.Tensor, eps: float = 1e-5, unbiased: bool = True) -> paddle.Tensor:
    """``instance_layer_norm_formula``, computed as x·A + B in six passes instead of about fourteen.

    With d = x − μ_I, k_I = 1/sqrt(σ²_I + ε) and k_L = 1/sqrt(σ²_L + ε), x − μ_L = d + (μ_I − μ_L), so

        out = d · γ(ρ·k_I + (1−ρ)·k_L) + γ(1−ρ)·k_L·(μ_I − μ_L) + β,

    where every factor but d is a per-(sample, channel) scalar. The layer statistics come from the
    channel ones (equal group sizes): μ_L = mean_c μ_I and, by the law of total variance, the biased
    σ²_L = mean_c[σ²_I,biased + (μ_I − μ_L)²].
    """
    x = x.astype('float32')
    m = x.shape[2] * x.shape[3]
    n = x.shape[1] * m
    mu_c = _spatial_mean(x)                                     # [B, C, 1, 1]
    d = x - mu_c
    var_c = _spatial_mean(d * d)                                # biased, per channel
    mu_l = _channel_mean(mu_c)                                  # [B, 1, 1, 1]
    gap = mu_c - mu_l                                           # μ_I − μ_L
    var_l = _channel_mean(var_c + gap ** 2)
    k_in = paddle.rsqrt(var_c * (m / (m - 1) if unbiased else 1.0) + eps)
    ln_weight = paddle.rsqrt(var_l * (n / (n - 1) if unbiased else 1.0) + eps) * (1 - rho)     # (1−ρ)·k_L
    scale = gamma * (rho * k_in + ln_weight)
    shift = gamma * (ln_weight * gap) + beta
    return d * scale + shift


class adaILN(nn.Layer):
    """Adaptive Layer-Instance Normalisation (AdaLIN, paper eq. 1):

        out = γ · (ρ·â_I + (1−ρ)·â_L) + β        (see ``instance_layer_norm_formula``)

    γ, β ∈ R^{B×C} come from the generator's MLP (one pair per image); ρ ∈ [0, 1]^C is
    learned, initialised to 0.9 and clipped to [0, 1] after every generator step
    (``RhoClipper``). Variances are unbiased, ε = 1e-5.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.rho = self.create_parameter(
            [1, num_features, 1, 1], default_initializer=nn.initializer.Constant(0.9))

    def forward(self, input: paddle.Tensor, gamma: paddle.Tensor, beta: paddle.Tensor) -> paddle.Tensor:
        return instance_layer_norm(input, self.rho, gamma.unsqueeze([2, 3]), beta.unsqueeze([2, 3]), self.eps)


class ILN(nn.Layer):
    """Layer-Instance Normalisation of the up-sampling blocks:

        out = γ · (ρ·â_I + (1−ρ)·â_L) + β

    as ``adaILN`` but with learned per-channel γ (init 1) and β (init 0), and ρ initialised
    to 0.0 (pure layer norm), clipped to [0, 1] after every generator step.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        shape = [1, num_features, 1, 1]
        self.rho = self.create_parameter(shape, default_initializer=nn.initializer.Constant(0.0))
        self.gamma = self.create_parameter(shape, default_initializer=nn.initializer.Constant(1.0))
        self.beta = self.create_parameter(shape, default_initializer=nn.initializer.Constant(0.0))

    def forward(self, input: paddle.Tensor) -> paddle.Tensor:
        return instance_layer_norm(input, self.rho, self.gamma, self.beta, self.eps)


# --------------------------------------------------------------------------- #
# The ablation's normalisations (paper Table 1: "w/ IN", "w/ LN", "w/ AdaIN", "w/ GN")
# --------------------------------------------------------------------------- #
class FixedLIN(nn.Layer):
    """γ·(ρ·â_I + (1−ρ)·â_L) + β with a fixed ρ: instance norm (ρ = 1) or layer norm (ρ = 0).

    The same statistics as AdaLIN/LIN (unbiased variances), so only the choice of normalisation
    differs. γ, β are learned per channel, or come from the generator's MLP when ``adaptive``.
    """

    def __init__(self, num_features: int, rho: float, adaptive: bool = False, eps: float = 1e-5):
        super().__init__()
        self.eps, self.adaptive = eps, adaptive
        shape = [1, num_features, 1, 1]
        self.register_buffer('mix', paddle.full(shape, rho), persistable=False)
        if not adaptive:
            self.gamma = self.create_parameter(shape, default_initializer=nn.initializer.Constant(1.0))
            self.beta = self.create_parameter(shape, default_initializer=nn.initializer.Constant(0.0))

    def forward(self, input: paddle.Tensor, gamma: paddle.Tensor = None, beta: paddle.Tensor = None):
        if self.adaptive:
            return instance_layer_norm(input, self.mix, gamma.unsqueeze([2, 3]), beta.unsqueeze([2, 3]), self.eps)
        return instance_layer_norm(input, self.mix, self.gamma, self.beta, self.eps)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with learned affine ("w/ GN"): gcd(32, C) groups (32 when C is a multiple
    of 32, as the paper's channel counts are); accepts (and ignores) the γ, β the decoder passes."""

    def __init__(self, num_features: int):
        super().__init__(math.gcd(32, num_features), num_features, epsilon=1e-5)

    def forward(self, input: paddle.Tensor, gamma: paddle.Tensor = None, beta: paddle.Tensor = None):
        return super().forward(input)


NORMS = ('adalin', 'in', 'ln', 'adain', 'gn')


def decoder_norm(kind: str, num_features: int, in_block: bool) -> nn.Layer:
    """The normalisation of the decoder for ``--norm kind``.

    Residual blocks (``in_block``): adalin → AdaLIN, adain → AdaIN (γ, β from the MLP);
    in / ln / gn → IN / LN / GN with learned affine. Up-sampling layers: adalin → LIN,
    adain and in → IN, ln → LN, gn → GN, all with learned affine.
    """
    if kind == 'adalin':
        return adaILN(num_features) if in_block else ILN(num_features)
    if kind == 'gn':
        return GroupNorm(num_features)
    rho = {'adain': 1.0, 'in': 1.0, 'ln': 0.0}[kind]
    return FixedLIN(num_features, rho, adaptive=(kind == 'adain' and in_block))


class SelfAttention(nn.Layer):
    """SAGAN self-attention (Zhang et al., ICML 2019), added to the input:

        f = W_f x, g = W_g x ∈ R^{C/8 × N}, h = W_h x ∈ R^{C × N}  (1×1 convolutions, N = H·W)
        β_{j,i} = softmax_i(f_iᵀ g_j)      o_j = Σ_i β_{j,i} h_i      out = γ·o + x

    γ is learned and starts at 0, so the block starts as the identity. ``spectral`` wraps the
    convolutions in spectral norm (in the discriminators, like their other layers).
    """

    def __init__(self, dim: int, spectral: bool = False):
        super().__init__()
        wrap = _spectral_norm if spectral else (lambda layer: layer)
        inner = max(1, dim // 8)
        self.query = wrap(_conv(dim, inner, 1, bias=True))
        self.key = wrap(_conv(dim, inner, 1, bias=True))
        self.value = wrap(_conv(dim, dim, 1, bias=True))
        self.gamma = self.create_parameter([1], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        f = self.query(x).flatten(2)                                # [B, C/8, N]
        g = self.key(x).flatten(2)                                  # [B, C/8, N]
        v = self.value(x).flatten(2)                                # [B, C, N]
        attention = F.softmax(paddle.matmul(g, f, transpose_x=True), axis=-1)   # [B, N_j, N_i]
        out = paddle.matmul(v, attention, transpose_y=True)         # o_j = Σ_i β_{j,i} h_i: [B, C, N]
        return self.gamma * out.reshape([-1] + list(x.shape[1:])) + x


class RhoClipper:
    """Clamp ρ of every AdaLIN/ILN layer to [clip_min, clip_max].

    Apply with ``generator.apply(RhoClipper(0, 1))`` right after the generator's optimizer
    step: ρ is a convex weight between instance and layer norm, and the paper constrains
    it to [0, 1] (the official code added this in PR #5, after issue #4).
    """

    def __init__(self, min: float, max: float):
        if not min < max:
            raise ValueError(f'RhoClipper needs min < max, got {min} and {max}')
        self.clip_min = min
        self.clip_max = max

    def __call__(self, module: nn.Layer) -> None:
        rho = getattr(module, 'rho', None)
        if rho is not None:
            with paddle.no_grad():
                rho.set_value(paddle.clip(rho, self.clip_min, self.clip_max))


# --------------------------------------------------------------------------- #
# Class activation map (shared by generator and discriminator)
# --------------------------------------------------------------------------- #
def _cam_weight(fc: nn.Linear) -> paddle.Tensor:
    """The FC weight used to reweight feature channels, shaped [1, C, 1, 1].

    Like the official ``list(fc.parameters())[0]`` this is the layer's first parameter.
    Under spectral norm that is ``weight_orig``, the *un-normalised* weight, while the
    logit itself uses the normalised one: a quirk of the official discriminator that we
    keep for parity. Paddle stores a Linear weight as [in, out] = [C, 1].
    """
    weight = fc.parameters()[0]
    return weight.transpose([1, 0]).unsqueeze([2, 3])


def class_activation(x: paddle.Tensor, gap_fc: nn.Linear, gmp_fc: nn.Linear,
                     conv1x1: nn.Conv2D, activation: nn.Layer):
    """CAM attention: x → (attended features, cam_logit [B, 2], heatmap [B, 1, H, W]).

    gap_logit = w_gapᵀ·GAP(x), gmp_logit = w_gmpᵀ·GMP(x);
    features  = act(conv1x1([x ⊙ w_gap, x ⊙ w_gmp])), heatmap = Σ_c features.

    GMP is a max-pool whose window is the whole map rather than ``adaptive_max_pool2d``: the
    same values and the same single-argmax gradient, but Paddle's (3.3.1, CPU) adaptive max-pool
    backward corrupts memory when the input holds NaN, which would turn one bad step into a
    crash instead of a skipped step (``amax``/``max`` are NaN-safe too but their backward is
    far slower on the CPU).
    """
    gap_logit = gap_fc(_spatial_mean(x).flatten(1))
    gmp_logit = gmp_fc(F.max_pool2d(x, kernel_size=list(x.shape[2:])).flatten(1))
    gap = x * _cam_weight(gap_fc)
    gmp = x * _cam_weight(gmp_fc)
    cam_logit = paddle.concat([gap_logit, gmp_logit], axis=1)
    x = activation(conv1x1(paddle.concat([gap, gmp], axis=1)))
    heatmap = x.sum(axis=1, keepdim=True)
    return x, cam_logit, heatmap


# --------------------------------------------------------------------------- #
# Generator
# --------------------------------------------------------------------------- #
class NearestUpsample2x(nn.Layer):
    """``nn.Upsample(scale_factor=2, mode='nearest')``.

    Eager: the interpolate kernel. Traced for export (``paddle.jit.save``): the same values as
    each pixel repeated into a 2×2 block (unsqueeze, expand, reshape), because paddle2onnx and
    Paddle Inference's oneDNN executor reject the interpolate op's attributes (Paddle 3.3.1).
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if paddle.in_dynamic_mode():
            return F.interpolate(x, scale_factor=2, mode='nearest')
        c, h, w = x.shape[1:]
        return x.unsqueeze([3, 5]).expand([-1, -1, -1, 2, -1, 2]).reshape([-1, c, h * 2, w * 2])


class ResnetBlock(nn.Layer):
    """Encoder residual block: x + [pad, conv3, IN, ReLU, pad, conv3, IN](x)."""

    def __init__(self, dim: int, use_bias: bool):
        super().__init__()
        self.conv_block = nn.Sequential(
            ReflectionPad2d(1), _conv(dim, dim, 3, bias=use_bias), _instance_norm(dim), nn.ReLU(),
            ReflectionPad2d(1), _conv(dim, dim, 3, bias=use_bias), _instance_norm(dim))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x + self.conv_block(x)


class ResnetAdaILNBlock(nn.Layer):
    """Decoder residual block: x + [pad, conv3, AdaLIN, ReLU, pad, conv3, AdaLIN](x; γ, β).

    ``norm`` replaces AdaLIN for the ablation (see ``decoder_norm``); non-adaptive norms ignore γ, β.
    """

    def __init__(self, dim: int, use_bias: bool, norm: str = 'adalin'):
        super().__init__()
        self.pad1 = ReflectionPad2d(1)
        self.conv1 = _conv(dim, dim, 3, bias=use_bias)
        self.norm1 = decoder_norm(norm, dim, in_block=True)
        self.relu1 = nn.ReLU()
        self.pad2 = ReflectionPad2d(1)
        self.conv2 = _conv(dim, dim, 3, bias=use_bias)
        self.norm2 = decoder_norm(norm, dim, in_block=True)

    def forward(self, x: paddle.Tensor, gamma: paddle.Tensor, beta: paddle.Tensor) -> paddle.Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
        out = self.norm2(self.conv2(self.pad2(out)), gamma, beta)
        return out + x


class ResnetGenerator(nn.Layer):
    """U-GAT-IT generator: encoder → CAM attention → AdaLIN decoder.

    Returns ``(out, cam_logit, heatmap)``: the translated image in [-1, 1] [B, C_out, H, W],
    the CAM logits [B, 2] (GAP, GMP) and the attention heatmap [B, 1, H/4, W/4].
    For the paper's ablation and its relatives: ``norm`` changes the decoder's normalisation
    (``decoder_norm``; without an adaptive one there is no γ/β MLP), ``use_cam=False`` removes
    the CAM attention (cam_logit and heatmap are then None), ``self_attn=True`` adds a SAGAN
    block after the encoder bottleneck.
    ``light=True`` feeds the γ/β MLP with the globally average-pooled bottleneck (C values)
    instead of the whole flattened bottleneck (C·H/4·W/4 values), which is what makes the
    full generator 279 M parameters at 256 px and ties it to ``img_size``.
    """

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, n_blocks: int = 6,
                 img_size: int = 256, light: bool = False,
                 norm: str = 'adalin', use_cam: bool = True, self_attn: bool = False):
        if n_blocks < 0 or norm not in NORMS:
            raise ValueError(f'ResnetGenerator needs n_blocks >= 0 and norm in {NORMS}, got {n_blocks}, {norm!r}')
        super().__init__()
        self.adaptive = norm in ('adalin', 'adain')
        self.use_cam = use_cam
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.ngf = ngf
        self.n_blocks = n_blocks
        self.img_size = img_size
        self.light = light

        n_downsampling = 2
        down = [ReflectionPad2d(3), _conv(input_nc, ngf, 7), _instance_norm(ngf), nn.ReLU()]
        for i in range(n_downsampling):
            mult = 2 ** i
            down += [ReflectionPad2d(1), _conv(ngf * mult, ngf * mult * 2, 3, stride=2),
                     _instance_norm(ngf * mult * 2), nn.ReLU()]
        mult = 2 ** n_downsampling
        dim = ngf * mult                                   # bottleneck channels
        down += [ResnetBlock(dim, use_bias=False) for _ in range(n_blocks)]
        if self_attn:
            self.self_attn = SelfAttention(dim)

        # Class activation map
        if use_cam:
            self.gap_fc = _linear(dim, 1)
            self.gmp_fc = _linear(dim, 1)
            self.conv1x1 = _conv(dim * 2, dim, 1, bias=True)
            self.relu = nn.ReLU()

        # γ, β MLP
        if self.adaptive:
            mlp_in = dim if light else (img_size // mult) * (img_size // mult) * dim
            fc = [_linear(mlp_in, dim), nn.ReLU(), _linear(dim, dim), nn.ReLU()]
            self.gamma = _linear(dim, dim)
            self.beta = _linear(dim, dim)
            self.FC = nn.Sequential(*fc)

        # Up-sampling bottleneck
        for i in range(n_blocks):
            setattr(self, 'UpBlock1_' + str(i + 1),
                    ResnetAdaILNBlock(dim, use_bias=False, norm=norm))

        # Up-sampling
        up = []
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            up += [NearestUpsample2x(), ReflectionPad2d(1),
                   _conv(ngf * mult, ngf * mult // 2, 3),
                   decoder_norm(norm, ngf * mult // 2, in_block=False), nn.ReLU()]
        up += [ReflectionPad2d(3), _conv(ngf, output_nc, 7), nn.Tanh()]

        self.DownBlock = nn.Sequential(*down)
        self.UpBlock2 = nn.Sequential(*up)

    def forward(self, input: paddle.Tensor):
        x = self.DownBlock(input)                                    # [B, 4ch, H/4, W/4]
        if hasattr(self, 'self_attn'):
            x = self.self_attn(x)
        cam_logit = heatmap = None
        if self.use_cam:
            x, cam_logit, heatmap = class_activation(x, self.gap_fc, self.gmp_fc, self.conv1x1, self.relu)
        gamma = beta = None
        if self.adaptive:
            if self.light:
                x_ = _spatial_mean(x).flatten(1)                      # [B, 4ch]
            else:
                x_ = x.flatten(1)                                     # [B, 4ch·H/4·W/4]
            x_ = self.FC(x_)
            gamma, beta = self.gamma(x_), self.beta(x_)             # [B, 4ch] each
        for i in range(self.n_blocks):
            x = getattr(self, 'UpBlock1_' + str(i + 1))(x, gamma, beta)
        out = self.UpBlock2(x)                                       # [B, C_out, H, W]
        return out, cam_logit, heatmap


# --------------------------------------------------------------------------- #
# Discriminator
# --------------------------------------------------------------------------- #
class Discriminator(nn.Layer):
    """PatchGAN discriminator with CAM attention and spectral norm.

    ``n_layers - 2`` stride-2 4×4 convolutions, one stride-1 4×4 convolution, the CAM
    block and a final stride-1 4×4 convolution to one channel; every convolution and both
    CAM FCs are spectrally normalised, except ``conv1x1``. The official code builds the
    global discriminator with n_layers=7 (256 px → 6×6 patch map, channels up to 32·ndf)
    and the local one with n_layers=5 (→ 30×30, up to 8·ndf).
    Returns ``(out [B, 1, h, w], cam_logit [B, 2], heatmap [B, 1, h+1, w+1])``.
    ``use_cam=False`` removes the CAM attention (cam_logit, heatmap None); ``self_attn=True``
    adds a SAGAN block after the first stride-2 block whose output is 32×32 or smaller for an
    ``img_size`` input.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 5, use_cam: bool = True,
                 self_attn: bool = False, img_size: int = 256):
        super().__init__()
        if n_layers < 3:
            raise ValueError(f'Discriminator needs n_layers >= 3, got {n_layers}')
        self.use_cam = use_cam
        model = [ReflectionPad2d(1), _spectral_norm(_conv(input_nc, ndf, 4, stride=2, bias=True)),
                 nn.LeakyReLU(0.2)]
        size, channels = img_size // 2, ndf
        attention_placed = False

        def maybe_attend():
            nonlocal attention_placed
            if self_attn and not attention_placed and size <= 32:
                model.append(SelfAttention(channels, spectral=True))
                attention_placed = True
        maybe_attend()
        for i in range(1, n_layers - 2):
            mult = 2 ** (i - 1)
            model += [ReflectionPad2d(1),
                      _spectral_norm(_conv(ndf * mult, ndf * mult * 2, 4, stride=2, bias=True)),
                      nn.LeakyReLU(0.2)]
            size, channels = size // 2, ndf * mult * 2
            maybe_attend()
        mult = 2 ** (n_layers - 2 - 1)
        model += [ReflectionPad2d(1),
                  _spectral_norm(_conv(ndf * mult, ndf * mult * 2, 4, stride=1, bias=True)),
                  nn.LeakyReLU(0.2)]

        # Class activation map
        mult = 2 ** (n_layers - 2)
        if use_cam:
            self.gap_fc = _spectral_norm(_linear(ndf * mult, 1))
            self.gmp_fc = _spectral_norm(_linear(ndf * mult, 1))
            self.conv1x1 = _conv(ndf * mult * 2, ndf * mult, 1, bias=True)
            self.leaky_relu = nn.LeakyReLU(0.2)

        self.pad = ReflectionPad2d(1)
        self.conv = _spectral_norm(_conv(ndf * mult, 1, 4, bias=False))
        self.model = nn.Sequential(*model)

    def forward(self, input: paddle.Tensor):
        x = self.model(input)
        cam_logit = heatmap = None
        if self.use_cam:
            x, cam_logit, heatmap = class_activation(x, self.gap_fc, self.gmp_fc, self.conv1x1, self.leaky_relu)
        out = self.conv(self.pad(x))
        return out, cam_logit, heatmap


def build_network(name: str, arch: dict) -> nn.Layer:
    """One of the six ``NETWORKS`` for an architecture dict (UGATIT.ARCH_ARGS), as the official
    ``build_model`` builds them. It hard-codes n_layers 7 (global D) and 5 (local D) and ignores --n_dis;
    they are n_dis + 1 and n_dis − 1 for its default n_dis = 6, the TF code's meaning."""
    if name.startswith('gen'):
        return ResnetGenerator(input_nc=arch['img_ch'], output_nc=arch['img_ch'], ngf=arch['ch'], n_blocks=arch['n_res'],
                               img_size=arch['img_size'], light=arch['light'], norm=arch['norm'],
                               use_cam=arch['cam_g'], self_attn='g' in arch['self_attn'])
    return Discriminator(input_nc=arch['img_ch'], ndf=arch['ch'],
                         n_layers=arch['n_dis'] + 1 if name.startswith('disG') else arch['n_dis'] - 1,
                         use_cam=arch['cam_d'], self_attn='d' in arch['self_attn'], img_size=arch['img_size'])


def min_image_size(n_layers: int) -> int:
    """Smallest square input (a multiple of 4, as the generator needs) a discriminator accepts.

    Each stride-2 block (reflect pad 1, 4×4 conv) maps s → ⌊s/2⌋ and each stride-1 block
    s → s − 1; every reflection pad needs at least 2 pixels and the patch map at least one.
    The global discriminator (n_layers=7) needs 96 px, the local one (n_layers=5) 24 px.
    """
    size = 4
    while True:
        s, ok = size, True
        for _ in range(n_layers - 2):          # stride-2 blocks
            ok = ok and s >= 2
            s //= 2
        for _ in range(2):                     # stride-1 block, then the output conv
            ok = ok and s >= 2
            s -= 1
        if ok and s >= 1:
            return size
        size += 4
