"""The U-GAT-IT trainer: networks, optimisers, the training step, the loop, test, save and load.

Mirrors ``UGATIT.py`` of the official PyTorch code (``build_model``, ``train``, ``test``,
``save``, ``load`` and the network names ``genA2B, genB2A, disGA, disGB, disLA, disLB``).
Losses (paper §2.2, official weights λ_adv=1, λ_cycle=10, λ_identity=10, λ_cam=1000):

    L_D = λ_adv · Σ_{X∈{A,B}} Σ_{s∈{G,L}} [ E(D(x)−1)² + E D(G(y))² + same on the CAM logits ]
    L_G = Σ_{X∈{A,B}} λ_adv·Σ_s [ E(D(G(y))−1)² + same on CAM logits ]
          + λ_cycle·|G_{B→A}(G_{A→B}(a)) − a|₁ + λ_identity·|G_{B→A}(a) − a|₁
          + λ_cam·[ BCE(η_{B→A}(b), 1) + BCE(η_{B→A}(a), 0) ]        (and symmetrically for B)
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from typing import Iterable

import numpy as np
import paddle
import paddle.nn.functional as F

import checkpoint as ckpt
from checkpoint import CheckpointError, checkpoint_name
from dataset import (ImageFolder, TrainSampler, check_dataset, inference_inputs,
                     make_loader, test_transform, translate_files)
from monitor import Monitor, progress_bar
from networks import Discriminator, ResnetGenerator, RhoClipper
from utils import check_folder, translation_strip, write_image

log = logging.getLogger('ugatit')

NETWORKS = ('genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB')
# Arguments that fix the shapes of the networks: a checkpoint only loads into the same ones.
ARCH_ARGS = ('light', 'img_size', 'ch', 'n_res', 'n_dis', 'img_ch', 'norm', 'cam_g', 'cam_d', 'self_attn')


def build_network(name: str, arch: dict, fast_norm: bool = True) -> paddle.nn.Layer:
    """One of the six ``NETWORKS`` for an architecture (a dict of ``ARCH_ARGS``).

    The official code hard-codes n_layers 7 (global D) and 5 (local D) and ignores --n_dis; they
    equal n_dis + 1 and n_dis − 1 for its default n_dis = 6, the TF code's meaning.
    """
    if name.startswith('gen'):
        return ResnetGenerator(arch['img_ch'], arch['img_ch'], ngf=arch['ch'], n_blocks=arch['n_res'],
                               img_size=arch['img_size'], light=arch['light'], fast_norm=fast_norm,
                               norm=arch['norm'], use_cam=arch['cam_g'], self_attn='g' in arch['self_attn'])
    n_layers = arch['n_dis'] + 1 if name.startswith('disG') else arch['n_dis'] - 1
    return Discriminator(arch['img_ch'], arch['ch'], n_layers=n_layers, use_cam=arch['cam_d'],
                         self_attn='d' in arch['self_attn'], img_size=arch['img_size'])


def variant_name(norm: str, cam_g: bool, cam_d: bool, self_attn: str) -> str:
    """The row of the paper's Table 1 (ablation) a configuration reproduces: 'U-GAT-IT', 'w/ IN',
    'w/ LN', 'w/ AdaIN', 'w/ GN', 'w/o CAM', 'w/o G_CAM', 'w/o D_CAM'; other combinations and
    self-attention get a descriptive name that no paper row has."""
    parts = []
    if norm != 'adalin':
        parts.append({'in': 'w/ IN', 'ln': 'w/ LN', 'adain': 'w/ AdaIN', 'gn': 'w/ GN'}[norm])
    if not cam_g and not cam_d:
        parts.append('w/o CAM')
    elif not cam_g:
        parts.append('w/o G_CAM')
    elif not cam_d:
        parts.append('w/o D_CAM')
    if self_attn != 'none':
        parts.append(f'+ self-attention ({ {"g": "G", "d": "D", "gd": "G and D"}[self_attn] })')
    return 'U-GAT-IT' if not parts else ' '.join(parts)


class TrainingDiverged(RuntimeError):
    """Too many consecutive training steps with non-finite losses or gradients."""


# --------------------------------------------------------------------------- #
# Loss helpers: one per formula
# --------------------------------------------------------------------------- #
def mse_to(x: paddle.Tensor, target: float) -> paddle.Tensor:
    """Least-squares GAN term E[(x − target)²] (the official ``MSELoss`` against ones/zeros), in float32."""
    return ((x.astype('float32') - target) ** 2).mean()


def bce_to(logit: paddle.Tensor, target: float) -> paddle.Tensor:
    """E[BCE(σ(logit), target)] (the official ``BCEWithLogitsLoss`` against ones/zeros), in float32."""
    logit = logit.astype('float32')
    return F.binary_cross_entropy_with_logits(logit, paddle.full_like(logit, target))


def d_adv_losses(D, real: paddle.Tensor, fake: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Discriminator LSGAN loss on the patch logits and on the CAM logits.

        adv = E(D(x) − 1)² + E D(G(y))²,   cam = E(η_D(x) − 1)² + E η_D(G(y))²

    D sees the real batch before the fake one, as in the official step: every training-mode
    call advances D's spectral-norm power iteration, so the order changes the numbers.
    """
    real_logit, real_cam_logit, _ = D(real)
    fake_logit, fake_cam_logit, _ = D(fake)
    adv = mse_to(real_logit, 1.0) + mse_to(fake_logit, 0.0)
    if real_cam_logit is None:                     # a discriminator without CAM (--cam_d False)
        return adv, None
    return adv, mse_to(real_cam_logit, 1.0) + mse_to(fake_cam_logit, 0.0)


def g_adv_losses(D, fake: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Generator LSGAN loss against D: adv = E(D(G(y)) − 1)², cam = E(η_D(G(y)) − 1)²."""
    fake_logit, fake_cam_logit, _ = D(fake)
    return mse_to(fake_logit, 1.0), None if fake_cam_logit is None else mse_to(fake_cam_logit, 1.0)


def l1(x: paddle.Tensor, y: paddle.Tensor) -> paddle.Tensor:
    """E|x − y| (the official ``L1Loss``), in float32."""
    return (x.astype('float32') - y.astype('float32')).abs().mean()


def _unwrap(layer):
    """The bare network inside a DataParallel / fleet wrapper."""
    return getattr(layer, '_layers', layer)


_FLEET_READY = False


def init_distributed() -> bool:
    """Under ``paddle.distributed.launch`` with several processes: ``fleet.init(is_collective=True)``
    (once per process). Returns whether this is a multi-process run."""
    global _FLEET_READY
    if paddle.distributed.get_world_size() <= 1:
        return False
    if not _FLEET_READY:
        from paddle.distributed import fleet
        fleet.init(is_collective=True)
        _FLEET_READY = True
    return True


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loading workers leave Ctrl-C (sent to the whole process group) to the trainer,
    which stops cleanly. SIGTERM stays: the DataLoader uses it to shut its workers down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """Signal handler: the first SIGINT/SIGTERM asks for a clean stop at the end of the step
    (checkpoint, exit 0); a second one exits at once without saving."""

    def __init__(self):
        self.signal_name = None

    def __call__(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            log.warning('second %s: exiting at once without saving', name)
            raise SystemExit(130)
        self.signal_name = name
        log.warning('%s received: stopping after this step with a checkpoint (again to exit at once)', name)

    @contextlib.contextmanager
    def installed(self):
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


# --------------------------------------------------------------------------- #
# Trainer
# --------------------------------------------------------------------------- #
class UGATIT:
    """U-GAT-IT training and testing, configured by the parsed command line (see main.py)."""

    def __init__(self, args):
        self.args = args
        self.light = args.light
        self.model_name = 'UGATIT_light' if self.light else 'UGATIT'
        self.dataset = args.dataset
        self.data_root = args.data_root
        self.result_dir = args.result_dir

        self.iteration = args.iteration
        self.decay_flag = args.decay_flag
        self.batch_size = args.batch_size
        self.print_freq = args.print_freq
        self.save_freq = args.save_freq
        self.latest_freq = args.latest_freq
        self.keep_ckpt = args.keep_ckpt
        self.max_nan_steps = args.max_nan_steps
        self.num_workers = args.num_workers
        self.seed = args.seed

        self.lr = args.lr
        self.weight_decay = args.weight_decay
        self.adv_weight = args.adv_weight
        self.cycle_weight = args.cycle_weight
        self.identity_weight = args.identity_weight
        self.cam_weight = args.cam_weight

        self.ch = args.ch
        self.n_res = args.n_res
        self.n_dis = args.n_dis
        self.img_size = args.img_size
        self.img_ch = args.img_ch
        self.cam_g, self.cam_d = args.cam_g, args.cam_d      # CAM attention (and its losses) in G / D
        self.resume = args.resume

        self.out_dir = os.path.join(self.result_dir, self.dataset)
        self.model_dir = os.path.join(self.out_dir, 'model')
        self.img_dir = os.path.join(self.out_dir, 'img')
        self.test_dir = os.path.join(self.out_dir, 'test')
        self.start_step = 0          # last completed step (0: none)
        self.nonfinite_steps = 0     # steps skipped for a non-finite loss or gradient, this run
        self.stop_reason = None      # set when a signal stopped training
        self.fingerprint = None      # the training file lists, saved with checkpoints (set by train())
        self.loaded_checkpoint = self.loaded_step = None     # what load_newest loaded
        self._latest_step = None     # step of the last 'latest' checkpoint written by this run

    # ------------------------------------------------------------------ #
    # Model
    # ------------------------------------------------------------------ #
    def build_model(self) -> None:
        """Build the six networks, both optimisers and the ρ clipper (no data needed)."""
        paddle.seed(self.seed)
        for name in NETWORKS:                      # in the official order (the same random init)
            setattr(self, name, build_network(name, self.arch(), self.args.fast_norm))

        # Adam with coupled L2 weight decay (a float weight_decay in Paddle = torch Adam's).
        adam = dict(learning_rate=self.lr, beta1=0.5, beta2=0.999, epsilon=1e-8,
                    weight_decay=self.weight_decay or None)
        # every discriminator's spectral-norm u and v: restored when a non-finite D loss skips a step
        self.sn_vectors = [b for name in ('disGA', 'disGB', 'disLA', 'disLB')
                           for key, b in _unwrap(getattr(self, name)).named_buffers()
                           if key.endswith(('weight_u', 'weight_v'))]
        self.G_params = self._params('genA2B', 'genB2A')
        self.D_params = self._params('disGA', 'disGB', 'disLA', 'disLB')
        self.G_optim = paddle.optimizer.Adam(parameters=self.G_params, **adam)
        self.D_optim = paddle.optimizer.Adam(parameters=self.D_params, **adam)
        # fp16 needs loss scaling (one scaler per optimizer); bf16 and fp32 do not.
        self.amp = self.args.amp
        self.G_scaler, self.D_scaler = ((paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15),
                                         paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15))
                                        if self.amp == 'fp16' else (None, None))
        # ρ of AdaLIN/ILN lives in [0, 1]; clip after every generator step.
        self.Rho_clipper = RhoClipper(0, 1)

        self.world_size = paddle.distributed.get_world_size()
        self.rank = paddle.distributed.get_rank()
        if self.world_size > 1:
            self._distribute()

    def _distribute(self) -> None:
        """Data parallelism on Paddle's collective engine (fleet): every network through
        ``fleet.distributed_model`` (which broadcasts rank 0's weights and buffers, spectral-norm
        u/v included, so all ranks start identical and gradients are averaged over ranks in the
        backward pass) and both optimisers through ``fleet.distributed_optimizer``."""
        from paddle.distributed import fleet
        init_distributed()
        for name in NETWORKS:
            setattr(self, name, fleet.distributed_model(getattr(self, name)))
        self.G_optim = fleet.distributed_optimizer(self.G_optim)
        self.D_optim = fleet.distributed_optimizer(self.D_optim)

    def networks(self) -> dict:
        return {name: getattr(self, name) for name in NETWORKS}

    def _params(self, *names: str) -> list:
        return [p for name in names for p in getattr(self, name).parameters()]

    def _stable_param_names(self, *names: str) -> dict[str, str]:
        """Run-specific parameter name → 'genA2B.DownBlock.1.weight'-style stable name."""
        return {p.name: f'{name}.{key}' for name in names
                for key, p in _unwrap(getattr(self, name)).named_parameters()}

    def set_mode(self, train: bool, names: Iterable[str] = NETWORKS) -> None:
        for name in names:
            getattr(self, name).train() if train else getattr(self, name).eval()

    def lr_at(self, step: int) -> float:
        """Learning rate of ``step`` (1-based): constant, then linear decay to 0 over the second half.

        Equals the official per-step decrement lr −= lr₀/(T//2) for every step > T//2, as a pure
        function of the step so that a resumed run gets it exactly.
        """
        half = self.iteration // 2
        if not self.decay_flag or step <= half or half == 0:
            return self.lr
        return self.lr * (1.0 - (step - half) / half)

    # ------------------------------------------------------------------ #
    # One training step
    # ------------------------------------------------------------------ #
    def train_step(self, real_A: paddle.Tensor, real_B: paddle.Tensor) -> dict[str, float]:
        """One discriminator update, one generator update and ρ clipping; returns every loss term.

        Numerically the official step, with less work. The official code calls genA2B(real_A)
        and genB2A(real_B) in the D update and again after D_optim.step() for the G update.
        A generator's output depends only on its weights and input, its weights change only
        in G_optim.step() (after both uses), and a forward changes no state in it (instance
        norm keeps no running statistics; no dropout, no spectral norm): both calls give the
        same tensors, so we compute them once. The official D loss also back-propagates into
        both generators, only for G_optim.zero_grad() to throw those gradients away; updating
        D on detached fakes yields the same D gradients without that backward pass.
        Each discriminator still sees reals, then fakes (D update), then fakes (G update).
        """
        self.set_mode(True)
        # Generator forwards, shared by the D and G updates.
        with self._autocast():
            fake_A2B, fake_A2B_cam_logit, _ = self.genA2B(real_A)
            fake_B2A, fake_B2A_cam_logit, _ = self.genB2A(real_B)
            fake_A2B2A, _, _ = self.genB2A(fake_A2B)
            fake_B2A2B, _, _ = self.genA2B(fake_B2A)
            fake_A2A, fake_A2A_cam_logit, _ = self.genB2A(real_A)
            fake_B2B, fake_B2B_cam_logit, _ = self.genA2B(real_B)

        # Update D
        self.D_optim.clear_grad()
        power_iteration_state = [(vector, vector.clone()) for vector in self.sn_vectors]
        with self._autocast():
            d_losses = self._d_losses(real_A, real_B, fake_A2B.detach(), fake_B2A.detach())
        self._backward(d_losses['D_loss'], self.D_scaler)
        if not self._may_step(d_losses['D_loss'], self.D_params, self.D_scaler):
            # A non-finite D loss skips the whole step: no update, and the spectral-norm u/v
            # that these forwards advanced are put back.
            self.D_optim.clear_grad()
            for vector, saved in power_iteration_state:
                vector.set_value(saved)
            return {**self._skipped(d_losses), 'G_loss': math.nan}
        self._step(self.D_optim, self.D_scaler)

        # Update G. D is only evaluated here: its parameters are frozen so that this backward
        # computes no gradient for them (the official code computes and later discards them).
        self.G_optim.clear_grad()
        with self._frozen(self.D_params):
            with self._autocast():
                g_losses = self._g_losses(
                    real_A, real_B, fake_A2B, fake_B2A, fake_A2B2A, fake_B2A2B, fake_A2A, fake_B2B,
                    fake_A2B_cam_logit, fake_B2A_cam_logit, fake_A2A_cam_logit, fake_B2B_cam_logit)
            self._backward(g_losses['G_loss'], self.G_scaler)
        if not self._may_step(g_losses['G_loss'], self.G_params, self.G_scaler):
            self.G_optim.clear_grad()    # keep D's update (from finite values), skip G's
            return self._skipped({**d_losses, **g_losses})
        self._step(self.G_optim, self.G_scaler)

        # Clip ρ of AdaLIN and ILN, after the optimizer step.
        self.genA2B.apply(self.Rho_clipper)
        self.genB2A.apply(self.Rho_clipper)
        return self._as_floats({**d_losses, **g_losses})

    def _as_floats(self, losses: dict) -> dict[str, float]:
        """Loss tensors → floats, averaged over ranks (= the loss of the global batch)."""
        values = paddle.stack([v.reshape([]).astype('float32') for v in losses.values()])
        if self.world_size > 1:
            paddle.distributed.all_reduce(values)
            values = values / self.world_size
        return {k: float(v) for k, v in zip(losses, values.numpy())}   # one device sync

    def _skipped(self, losses: dict) -> dict[str, float]:
        self.nonfinite_steps += 1
        return self._as_floats(losses)

    # ------------------------------------------------------------------ #
    # Mixed precision and guarded updates
    # ------------------------------------------------------------------ #
    def _autocast(self):
        """``paddle.amp.auto_cast`` O1 in the chosen dtype (normalisation statistics and losses
        stay float32: networks.instance_layer_norm and the loss helpers cast), or nothing."""
        if self.amp == 'off':
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(enable=True, level='O1', dtype='float16' if self.amp == 'fp16' else 'bfloat16')

    @staticmethod
    def _backward(loss: paddle.Tensor, scaler) -> None:
        (loss if scaler is None else scaler.scale(loss)).backward()

    def _may_step(self, loss: paddle.Tensor, params: list, scaler) -> bool:
        """Whether to apply this update: the loss and every gradient finite, on every rank.

        With fp16 the GradScaler handles overflowing gradients itself (it skips that step and
        lowers the scale, as loss scaling intends); only a non-finite loss counts as a fault.
        Paddle disables the scaler off GPUs/XPUs, and then the gradients are checked here too.
        """
        scaler_checks_grads = scaler is not None and scaler.is_enable()
        checked = [loss] if scaler_checks_grads else [loss] + [p.grad for p in params if p.grad is not None]
        return not self.any_rank(not ckpt.all_finite(checked))

    @staticmethod
    def _step(optim, scaler) -> None:
        if scaler is None:
            optim.step()
        else:
            scaler.step(optim)
            scaler.update()

    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is true on at least one rank (a 1-element all-reduce)."""
        if self.world_size == 1:
            return flag
        votes = paddle.to_tensor([1.0 if flag else 0.0])
        paddle.distributed.all_reduce(votes)
        return bool(votes.item() > 0)

    @staticmethod
    @contextlib.contextmanager
    def _frozen(params: list):
        params = [p for p in params if not p.stop_gradient]
        for p in params:
            p.stop_gradient = True
        try:
            yield
        finally:
            for p in params:
                p.stop_gradient = False

    def _d_losses(self, real_A, real_B, fake_A2B, fake_B2A) -> dict:
        losses = {}
        for domain, real, fake in (('A', real_A, fake_B2A), ('B', real_B, fake_A2B)):
            for scale in ('G', 'L'):
                adv, cam = d_adv_losses(getattr(self, f'dis{scale}{domain}'), real, fake)
                losses[f'D_ad_loss_{scale}{domain}'] = adv
                if cam is not None:
                    losses[f'D_ad_cam_loss_{scale}{domain}'] = cam
            losses[f'D_loss_{domain}'] = self.adv_weight * sum(
                losses[k] for scale in 'GL' for kind in ('', '_cam')
                if (k := f'D_ad{kind}_loss_{scale}{domain}') in losses)
        losses['D_loss'] = losses['D_loss_A'] + losses['D_loss_B']
        return losses

    def _g_losses(self, real_A, real_B, fake_A2B, fake_B2A, fake_A2B2A, fake_B2A2B, fake_A2A, fake_B2B,
                  fake_A2B_cam_logit, fake_B2A_cam_logit, fake_A2A_cam_logit, fake_B2B_cam_logit) -> dict:
        losses = {}
        per_domain = {  # domain: (real, translated into it, cycled back to it, identity, CAM on source, CAM on target)
            'A': (real_A, fake_B2A, fake_A2B2A, fake_A2A, fake_B2A_cam_logit, fake_A2A_cam_logit),
            'B': (real_B, fake_A2B, fake_B2A2B, fake_B2B, fake_A2B_cam_logit, fake_B2B_cam_logit),
        }
        for domain, (real, fake, cycled, identity, cam_source, cam_target) in per_domain.items():
            for scale in ('G', 'L'):
                # the bare D (no data-parallel wrapper): it is not trained by this loss
                adv, cam = g_adv_losses(_unwrap(getattr(self, f'dis{scale}{domain}')), fake)
                losses[f'G_ad_loss_{scale}{domain}'] = adv
                if cam is not None:
                    losses[f'G_ad_cam_loss_{scale}{domain}'] = cam
            losses[f'G_recon_loss_{domain}'] = l1(cycled, real)
            losses[f'G_identity_loss_{domain}'] = l1(identity, real)
            total = (self.adv_weight * sum(losses[k] for scale in 'GL' for kind in ('', '_cam')
                                           if (k := f'G_ad{kind}_loss_{scale}{domain}') in losses)
                     + self.cycle_weight * losses[f'G_recon_loss_{domain}']
                     + self.identity_weight * losses[f'G_identity_loss_{domain}'])
            if cam_source is not None:
                # The generator into X must read its input as "from the other domain" (1) and X as 0.
                losses[f'G_cam_loss_{domain}'] = bce_to(cam_source, 1.0) + bce_to(cam_target, 0.0)
                total = total + self.cam_weight * losses[f'G_cam_loss_{domain}']
            losses[f'G_loss_{domain}'] = total
        losses['G_loss'] = losses['G_loss_A'] + losses['G_loss_B']
        return losses

    # ------------------------------------------------------------------ #
    # Data
    # ------------------------------------------------------------------ #
    def _domain(self, name: str, augment: bool) -> ImageFolder:
        return ImageFolder(os.path.join(self.data_root, self.dataset, name), self.img_size,
                           augment=augment, channels=self.img_ch)

    def _train_stream(self, dataset: ImageFolder, stream: int, first_step: int):
        sampler = TrainSampler(dataset, self.batch_size, self.seed, stream, first_step, self.iteration)
        return iter(make_loader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                                worker_init_fn=_ignore_stop_signals))

    def data_fingerprint(self, *datasets: ImageFolder) -> dict:
        """Image counts and a hash of the file names: the data order is a function of these."""
        import hashlib
        return {os.path.basename(d.root): [len(d), hashlib.sha1('\n'.join(
            os.path.relpath(p, d.root) for p in d.paths).encode()).hexdigest()[:16]] for d in datasets}

    # ------------------------------------------------------------------ #
    # Training loop
    # ------------------------------------------------------------------ #
    def train(self) -> None:
        """Train from step 1, or from the newest checkpoint with --resume, up to --iteration.

        Stops cleanly on SIGINT/SIGTERM (checkpoint at the current step), skips steps whose
        loss or gradients are not finite and gives up after --max_nan_steps in a row.
        """
        check_dataset(self.data_root, self.dataset)
        trainA, trainB = self._domain('trainA', True), self._domain('trainB', True)
        self.fingerprint = self.data_fingerprint(trainA, trainB)
        ckpt.check_writable(self.model_dir, need_bytes=self.checkpoint_bytes())
        check_folder(self.img_dir)
        if self.resume:
            self.resume_latest()
            self._check_ranks_agree(self.start_step, 'resumed at different steps (each rank reads '
                                    '<result_dir>/<dataset>/model: use a filesystem shared by all machines)')
        first = self.start_step + 1
        if first > self.iteration:
            log.info('nothing to do: step %d already reached --iteration %d', self.start_step, self.iteration)
            return
        grid = self._grid_samples(trainA, trainB)
        iter_A = self._train_stream(trainA, 0, first)
        iter_B = self._train_stream(trainB, 1, first)
        log.info('training start: steps %d..%d, %s, batch %d, %d+%d train images',
                 first, self.iteration, self.model_name, self.batch_size, len(trainA), len(trainB))
        with StopRequest().installed() as stop:
            self._loop(first, iter_A, iter_B, grid, stop)

    def _check_ranks_agree(self, value: int, problem: str) -> None:
        if self.world_size > 1:
            low, high = paddle.to_tensor([-float(value)]), paddle.to_tensor([float(value)])
            paddle.distributed.all_reduce(low, op=paddle.distributed.ReduceOp.MAX)
            paddle.distributed.all_reduce(high, op=paddle.distributed.ReduceOp.MAX)
            if -low.item() != high.item():
                raise CheckpointError(f'the ranks {problem}')

    def _loop(self, first: int, iter_A, iter_B, grid: dict, stop: StopRequest) -> None:
        log_every = max(1, self.print_freq // 10)
        monitor = Monitor(os.path.join(self.out_dir, 'vdl'), first, self.iteration, log_every, enabled=self.rank == 0)
        try:
            nan_run = 0
            for step in range(first, self.iteration + 1):
                lr = self.lr_at(step)
                self.G_optim.set_lr(lr)
                self.D_optim.set_lr(lr)
                real_A, real_B = next(iter_A)[0], next(iter_B)[0]
                skipped_before = self.nonfinite_steps
                losses = self.train_step(real_A, real_B)
                skipped = self.nonfinite_steps > skipped_before
                self.start_step = step
                monitor.step(losses, skipped)
                nan_run = nan_run + 1 if skipped else 0
                if skipped:
                    self._nonfinite(step, losses, nan_run)
                if step % log_every == 0 or step == self.iteration:
                    monitor.report(step, lr, self.rho_values() if self.rank == 0 else {})
                if step % self.print_freq == 0:
                    for direction, image in self.save_grids(step, grid).items():
                        monitor.image(f'grid/{direction}', image, step)
                self._periodic_saves(step)
                if self.any_rank(stop.signal_name is not None):      # all ranks stop at the same step
                    path = self._save_latest(step)
                    self.stop_reason = stop.signal_name or 'a signal on another rank'
                    log.warning('stopped by %s at step %d: checkpoint %s; continue with --resume True',
                                self.stop_reason, step, path)
                    return
        finally:
            monitor.close()
        log.info('training finished at step %d: checkpoints in %s', self.iteration, self.model_dir)

    def _nonfinite(self, step: int, losses: dict, nan_run: int) -> None:
        log.warning('step %d: non-finite loss or gradient (d_loss %s, g_loss %s): update skipped '
                    '(%d in a row, %d this run)',
                    step, losses['D_loss'], losses['G_loss'], nan_run, self.nonfinite_steps)
        if nan_run >= self.max_nan_steps:
            last = self.newest_checkpoint()
            raise TrainingDiverged(
                f'{nan_run} consecutive steps with non-finite losses or gradients (steps {step - nan_run + 1}-{step}): '
                f'training stopped; the last good checkpoint is {last or "none (none was written)"}: '
                f'lower --lr or check the data, then --resume True')

    def rho_values(self) -> dict[str, np.ndarray]:
        """ρ of every AdaLIN/LIN layer, by 'genA2B.UpBlock1_1.norm1'-style name."""
        return {f'{name}.{key}': layer.rho.numpy() for name in ('genA2B', 'genB2A')
                for key, layer in _unwrap(getattr(self, name)).named_sublayers() if hasattr(layer, 'rho')}

    def _periodic_saves(self, step: int) -> None:
        if step % self.save_freq == 0:
            self.save(os.path.join(self.model_dir, checkpoint_name(self.dataset, step)), step)
            for path in ckpt.prune(self.model_dir, self.dataset, self.keep_ckpt):
                log.info('removed %s (--keep_ckpt %d)', path, self.keep_ckpt)
        if step % self.latest_freq == 0 or step == self.iteration:
            self._save_latest(step)

    def _save_latest(self, step: int) -> str:
        path = os.path.join(self.model_dir, checkpoint_name(self.dataset, None))
        if self._latest_step != step:
            self.save(path, step)
            self._latest_step = step
        return path

    # ------------------------------------------------------------------ #
    # Sample grids
    # ------------------------------------------------------------------ #
    def _grid_samples(self, trainA: ImageFolder, trainB: ImageFolder, n: int = 5) -> dict:
        """Fixed images for the progress grids: n train and n test images per domain.

        The official code draws them from the running training iterators, which shifts the
        data stream at every grid; fixed images keep the stream (and exact resume) intact and
        show the same faces from grid to grid.
        """
        samples = {}
        for domain, train in (('A', trainA), ('B', trainB)):
            test_path = os.path.join(self.data_root, self.dataset, 'test' + domain)
            test = ImageFolder(test_path, self.img_size, channels=self.img_ch, check=False) \
                if os.path.isdir(test_path) else train
            images = [train.load(i % len(train)) for i in range(n)] + [test.load(i % len(test)) for i in range(n)]
            samples[domain] = paddle.to_tensor(np.stack([test_transform(img, self.img_size) for img in images]))
        return samples

    def _generators(self, direction: str) -> tuple:
        """(translating generator, generator back) of a direction, unwrapped."""
        return (_unwrap(self.genA2B), _unwrap(self.genB2A)) if direction == 'A2B' \
            else (_unwrap(self.genB2A), _unwrap(self.genA2B))

    @paddle.no_grad()
    def translate_with_cam(self, real: paddle.Tensor, direction: str, engine=None) -> list[np.ndarray]:
        """The official 7-tile strips (real, CAM, identity, CAM, translation, CAM, cycle), one per image.

        ``engine``: a compiled ``export.strip_engine`` of this direction, else the eager generators.
        """
        if engine is not None:
            real = real.numpy()
            fake, fake_heatmap, cycle, cycle_heatmap, identity, identity_heatmap = engine(real)
        else:
            from export import StripModel
            fake, fake_heatmap, cycle, cycle_heatmap, identity, identity_heatmap = \
                StripModel(*self._generators(direction))(real)

        def at(heatmap, i):                        # no heatmap without CAM (--cam_g False)
            return None if heatmap is None else heatmap[i]
        return [translation_strip(real[i], identity[i], at(identity_heatmap, i), fake[i], at(fake_heatmap, i),
                                  cycle[i], at(cycle_heatmap, i), self.img_size) for i in range(real.shape[0])]

    def save_grids(self, step: int, grid: dict) -> dict[str, np.ndarray]:
        """``img/A2B_%07d.png`` and ``img/B2A_%07d.png``: 7 rows × (5 train + 5 test) columns.
        Returns the grids (BGR, [0, 1]) by direction; nothing on ranks other than 0."""
        if self.rank != 0:
            return {}
        self.set_mode(False, ('genA2B', 'genB2A'))
        grids = {}
        for direction, domain in (('A2B', 'A'), ('B2A', 'B')):
            grids[direction] = np.concatenate(self.translate_with_cam(grid[domain], direction), axis=1)
            write_image(os.path.join(self.img_dir, f'{direction}_{step:07d}.png'), grids[direction])
        self.set_mode(True, ('genA2B', 'genB2A'))
        return grids

    # ------------------------------------------------------------------ #
    # Test
    # ------------------------------------------------------------------ #
    def test(self) -> str:
        """Translate testA and testB with the newest checkpoint.

        Writes the official strips ``test/A2B_%d.png`` / ``test/B2A_%d.png`` (numbered from 1)
        and the bare translations ``test/A2B/<stem>.png`` / ``test/B2A/<stem>.png`` (input size
        img_size, same stem as the input) for metric computation. Returns the test folder.
        Under a multi-process launch only rank 0 tests (a few hundred images need no more).
        """
        if self.rank != 0:
            return self.test_dir
        check_dataset(self.data_root, self.dataset, ('testA', 'testB'))
        self.load_newest(weights_only=True)
        self.set_mode(False)
        for direction, domain in (('A2B', 'testA'), ('B2A', 'testB')):
            data = ImageFolder(os.path.join(self.data_root, self.dataset, domain), self.img_size,
                               channels=self.img_ch)
            n = self.translate_folder(data, direction, check_folder(os.path.join(self.test_dir, direction)),
                                      strip_dir=self.test_dir)
            log.info('%s: %d images → %s', direction, n, os.path.join(self.test_dir, direction))
        with open(os.path.join(self.test_dir, 'info.json'), 'w') as f:
            json.dump({'checkpoint': self.loaded_checkpoint, 'step': self.loaded_step, 'arch': self.arch()}, f, indent=1)
        return self.test_dir

    def translate_folder(self, data: ImageFolder, direction: str, out_dir: str, strip_dir: str | None = None) -> int:
        """Translate every image of ``data``: ``out_dir/<stem>.png`` and, with ``strip_dir``, the
        official strips ``strip_dir/<direction>_%d.png``. Returns the number of images."""
        self.set_mode(False, ('genA2B', 'genB2A'))
        loader = make_loader(data, batch_size=self.test_batch_size(), num_workers=self.num_workers)
        with self._test_engine(direction) as engine:
            return self._translate_batches(loader, data, direction, out_dir, strip_dir, engine)

    def test_batch_size(self) -> int:
        """Images per test forward: 8 for small models (ch·img_size ≤ 2048), where batching
        amortises the per-operator cost (128 px, ch 16, CPU: 97 instead of 126 ms per image), else 1
        as the official loop: on large maps it only thrashes the cache (256 px, ch 64: 4.1 s per image
        at batch 2, 3.0 s at batch 1). Each image's result does not depend on its batch."""
        return 8 if self.ch * self.img_size <= 2048 else 1

    @contextlib.contextmanager
    def _test_engine(self, direction: str):
        """A Paddle Inference (oneDNN) program for the strips when --test_engine asks for one
        (auto: on the CPU, where it is 2–2.5× faster than eager Paddle), else None. With --amp bf16
        its convolutions run in bfloat16 (oneDNN on AMX/AVX-512 CPUs)."""
        use = self.args.test_engine == 'inference' or (self.args.test_engine == 'auto' and
                                                       paddle.get_device() == 'cpu' and self.cam_g)
        if not use:
            yield None
            return
        import tempfile
        from export import strip_engine
        with tempfile.TemporaryDirectory(prefix='.engine-', dir=check_folder(self.out_dir)) as folder:
            yield strip_engine(*self._generators(direction), self.img_ch, self.img_size, folder,
                               bf16=self.amp == 'bf16')

    def _translate_batches(self, loader, data, direction, out_dir, strip_dir, engine) -> int:
        bar = progress_bar(len(data), desc=direction, unit='img')
        n = 0
        for real, index in loader:
            if bar is not None:
                bar.update(real.shape[0])
            for i, strip in enumerate(self.translate_with_cam(real, direction, engine)):
                n += 1
                if strip_dir is not None:
                    write_image(os.path.join(strip_dir, f'{direction}_{n}.png'), strip)
                translation = strip[4 * self.img_size:5 * self.img_size]      # tile 5 of 7
                write_image(os.path.join(out_dir, data.stem(int(index[i])) + '.png'), translation)
        if bar is not None:
            bar.close()
        return n

    # ------------------------------------------------------------------ #
    # Translate your own images, export
    # ------------------------------------------------------------------ #
    @paddle.no_grad()
    def infer(self, input_path: str, direction: str, output_dir: str | None = None, keep_size: bool = False) -> str:
        """Translate an image or a folder of images of any size with the newest checkpoint.

        Each image is centre-cropped to a square and resized to img_size (``keep_size``: squashed
        whole to img_size and the translation resized back to the input's size). Writes
        ``<output_dir>/<stem>.png`` (default ``<result_dir>/<dataset>/infer/<direction>``);
        unreadable files are skipped with a warning naming each. Returns the output folder.
        """
        files = inference_inputs(input_path)        # a bad --input fails before the checkpoint loads
        self.load_newest(weights_only=True)
        generator = _unwrap(self.genA2B if direction == 'A2B' else self.genB2A)
        generator.eval()
        output_dir = output_dir or os.path.join(self.out_dir, 'infer', direction)
        bar = progress_bar(len(files), desc=direction, unit='img')
        written = translate_files(input_path, files, lambda batch: generator(paddle.to_tensor(batch))[0].numpy(),
                                  self.img_size, self.img_ch, output_dir, keep_size,
                                  on_image=bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
        log.info('%s: %d images translated into %s', direction, written, output_dir)
        return output_dir

    # ------------------------------------------------------------------ #
    # Checkpoints
    # ------------------------------------------------------------------ #
    def arch(self) -> dict:
        return {name: getattr(self.args, name) for name in ARCH_ARGS}

    def variant(self) -> str:
        """The paper's Table 1 row this configuration reproduces, or a description of it."""
        return variant_name(self.args.norm, self.cam_g, self.cam_d, self.args.self_attn)

    def describe(self) -> str:
        """'U-GAT-IT light, ch 64, n_res 4, 256 px' (plus the variant, for reports)."""
        base = f'U-GAT-IT {"light" if self.light else "full"}, ch {self.ch}, n_res {self.n_res}, {self.img_size} px'
        variant = self.variant()
        return base if variant == 'U-GAT-IT' else f'{base}, {variant}'

    def test_outputs_current(self) -> bool:
        """Whether test/ holds the translations of the newest checkpoint."""
        try:
            with open(os.path.join(self.test_dir, 'info.json')) as f:
                info = json.load(f)
        except (OSError, ValueError):
            return False
        return info.get('checkpoint') == self.newest_checkpoint() and info.get('arch') == self.arch()

    def checkpoint_bytes(self) -> int:
        """About the size of one checkpoint: weights plus Adam's two moments, in float32."""
        return 3 * 4 * sum(int(np.prod(p.shape)) for name in NETWORKS for p in getattr(self, name).parameters())

    def save(self, path: str, step: int) -> None:
        """Write one checkpoint: the six networks (spectral-norm u/v included), both optimisers,
        the step, the learning rate, the RNG state, the data fingerprint and the arguments.

        Written atomically, by rank 0 only; never when a parameter is NaN or infinite.
        """
        if paddle.distributed.get_rank() != 0:
            return
        params = self._params(*NETWORKS)
        if not ckpt.all_finite(params):
            log.error('not writing %s: the parameters at step %d are not finite', path, step)
            return
        state = {name: _unwrap(net).state_dict() for name, net in self.networks().items()}
        state['G_optim'] = ckpt.portable_optimizer_state(self.G_optim, self._stable_param_names('genA2B', 'genB2A'))
        state['D_optim'] = ckpt.portable_optimizer_state(
            self.D_optim, self._stable_param_names('disGA', 'disGB', 'disLA', 'disLB'))
        if self.G_scaler is not None:
            state['G_scaler'], state['D_scaler'] = self.G_scaler.state_dict(), self.D_scaler.state_dict()
        state.update(format=ckpt.FORMAT, step=int(step), lr=self.lr_at(max(step, 1)), arch=self.arch(),
                     args=vars(self.args).copy(), seed=self.seed, rng=paddle.get_rng_state(),
                     data=self.fingerprint)
        started = time.time()
        size = ckpt.write_checkpoint(path, state)
        log.info('saved %s (step %d, %.2f GB, %.1fs)', path, step, size / 1e9, time.time() - started)


    def load(self, path: str, weights_only: bool = False) -> int:
        """Load a checkpoint written by ``save`` or converted by convert.py; returns its step.

        Checks the architecture first (one-line ``ArchitectureMismatch``), then every network's
        keys and shapes. Without ``weights_only`` also restores the optimisers (fresh Adam state,
        with a log line, when the checkpoint has none: converted official weights) and the RNG.
        """
        return self.load_state(path, ckpt.read_checkpoint(path), weights_only)

    def load_state(self, path: str, state: dict, weights_only: bool = False) -> int:
        ckpt.check_architecture(path, state.get('arch'), self.arch())
        for name, net in self.networks().items():
            if name not in state:
                raise CheckpointError(f'{path} has no {name}: not a U-GAT-IT checkpoint')
            _check_state_shapes(path, name, _unwrap(net), state[name])     # set_state_dict only warns
            _unwrap(net).set_state_dict(state[name])
        if not weights_only:
            if 'G_optim' in state and 'D_optim' in state:
                ckpt.load_portable_optimizer_state(self.G_optim, state['G_optim'],
                                                   self._stable_param_names('genA2B', 'genB2A'))
                ckpt.load_portable_optimizer_state(self.D_optim, state['D_optim'],
                                                   self._stable_param_names('disGA', 'disGB', 'disLA', 'disLB'))
            else:
                log.info('%s holds no optimizer state (converted weights?): Adam starts fresh', path)
            if self.G_scaler is not None and 'G_scaler' in state:
                self.G_scaler.load_state_dict(state['G_scaler'])
                self.D_scaler.load_state_dict(state['D_scaler'])
            if state.get('rng') is not None:
                paddle.set_rng_state(state['rng'])
            saved_data, now = state.get('data'), self.fingerprint
            if saved_data and now and saved_data != now:
                log.warning('the training images changed since %s was written: the data order differs '
                            'from an uninterrupted run', path)
        return int(state.get('step', 0))

    def newest_checkpoint(self) -> str | None:
        """The checkpoint with the highest step (periodic or ``latest``), without loading any."""
        found = ckpt.candidates(self.model_dir, self.dataset)
        return found[0][1] if found else None

    def load_newest(self, weights_only: bool = True) -> int:
        """Load the newest checkpoint that loads (for test/eval); returns its step."""
        for path, state in ckpt.iter_valid(self.model_dir, self.dataset):
            step = self.load_state(path, state, weights_only)
            self.loaded_checkpoint, self.loaded_step = path, step
            log.info('loaded %s (step %d)', path, step)
            return step
        raise FileNotFoundError(f'no usable checkpoint in {self.model_dir}: train first (--phase train) '
                                f'or convert official weights with convert.py')

    def resume_latest(self) -> None:
        """Continue from the newest checkpoint that loads; a corrupt one falls back to the previous."""
        try:
            self.start_step = self.load_newest(weights_only=False)
        except FileNotFoundError:
            log.info('--resume: no usable checkpoint in %s, starting from step 1', self.model_dir)
            return
        log.info('resumed from %s at step %d', self.loaded_checkpoint, self.start_step)


def _check_state_shapes(path: str, name: str, net, state: dict) -> None:
    """Every key present with the right shape (Paddle's set_state_dict only warns)."""
    expected = net.state_dict()
    problems = [f'missing {k}' for k in expected if k not in state]
    problems += [f'unexpected {k}' for k in state if k not in expected]
    problems += [f'{k}: {list(state[k].shape)} vs {list(v.shape)}' for k, v in expected.items()
                 if k in state and list(state[k].shape) != list(v.shape)]
    if problems:
        raise CheckpointError(f'{path}: {name} does not fit this network: ' + ', '.join(problems[:8])
                              + (f' and {len(problems) - 8} more' if len(problems) > 8 else ''))
