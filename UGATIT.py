"""U-GAT-IT (Kim, Kim, Kang & Lee, ICLR 2020) in PaddlePaddle: the trainer of the official PyTorch
code's UGATIT.py (znxlwm/UGATIT-pytorch): build_model, train, test, save, load.

Paper ↔ code. Domain A is the source (selfie), B the target (anime).
    G_{s→t}, G_{t→s}          genA2B, genB2A (ResnetGenerator)
    D_t, D_s (global, local)   disGB, disLB and disGA, disLA (Discriminator, n_layers 7 and 5)
    η_s, η_t (generator CAM)   the generators' cam_logit; η_D (discriminator CAM) theirs
    L_lsgan                    D_ad_loss_*, G_ad_loss_*         (* = G|L for global|local, then A|B)
    L_lsgan on η_D             D_ad_cam_loss_*, G_ad_cam_loss_*
    L_cycle                    G_recon_loss_A, G_recon_loss_B
    L_identity                 G_identity_loss_A, G_identity_loss_B
    L_cam (generator)          G_cam_loss_A, G_cam_loss_B
    λ1..λ4 (1, 10, 10, 1000)   --adv_weight, --cycle_weight, --identity_weight, --cam_weight
    AdaLIN, LIN, ρ ∈ [0, 1]    networks.adaILN, networks.ILN, networks.RhoClipper

Beyond the paper (extras/): data parallelism, numerical guards and stop signals, checkpoint files.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time

import numpy as np
import paddle
import paddle.nn.functional as F

from dataset import ImageFolder, TrainSampler, check_dataset, make_loader, test_transform, write_image
from extras import checkpoints as ckpt
from extras.checkpoints import CheckpointError, checkpoint_name
from extras.deploy import StripModel, strip_engine
from extras.distributed import any_rank, distribute, mean_over_ranks, rank, ranks_agree, unwrap
from extras.guards import StopRequest, TrainingDiverged, all_finite, frozen, ignore_interrupt, snapshot, update_is_finite
from extras.monitor import Monitor, progress_bar
from extras.tf_networks import TFAdam, TFDiscriminator, TFResnetGenerator, advance_power_iterations, decay_kernels, spectral_norms
from networks import NETWORKS, Discriminator, ResnetGenerator, RhoClipper
from utils import check_folder, translation_strip

log = logging.getLogger('ugatit')

# The arguments that fix the networks' shapes: a checkpoint loads only into the same ones.
ARCH_ARGS = ('arch', 'light', 'img_size', 'ch', 'n_res', 'n_dis', 'img_ch', 'norm', 'cam_g', 'cam_d', 'self_attn',
             'smoothing')


def build_network(name: str, arch: dict) -> paddle.nn.Layer:
    """One of the six ``NETWORKS`` for an architecture (a dict of ``ARCH_ARGS``).

    The official code hard-codes n_layers 7 (global D) and 5 (local D) and ignores --n_dis; they are
    n_dis + 1 and n_dis − 1 for its default n_dis = 6, the TF code's meaning. ``arch='tf'`` builds the
    authors' TensorFlow architecture instead (extras/tf_networks.py), to hold their released model.
    """
    if arch.get('arch', 'pytorch') == 'tf':
        if name.startswith('gen'):
            return TFResnetGenerator(arch['img_ch'], arch['ch'], arch['n_res'], arch['img_size'], arch['light'],
                                     arch['smoothing'])
        return TFDiscriminator(arch['img_ch'], arch['ch'], arch['n_dis'], local=name.startswith('disL'))
    if name.startswith('gen'):
        return ResnetGenerator(input_nc=arch['img_ch'], output_nc=arch['img_ch'], ngf=arch['ch'], n_blocks=arch['n_res'],
                               img_size=arch['img_size'], light=arch['light'], norm=arch['norm'],
                               use_cam=arch['cam_g'], self_attn='g' in arch['self_attn'])
    return Discriminator(input_nc=arch['img_ch'], ndf=arch['ch'],
                         n_layers=arch['n_dis'] + 1 if name.startswith('disG') else arch['n_dis'] - 1,
                         use_cam=arch['cam_d'], self_attn='d' in arch['self_attn'], img_size=arch['img_size'])


# --------------------------------------------------------------------------- #
# Losses: one helper per formula, in float32 (also under mixed precision)
# --------------------------------------------------------------------------- #
def mse(x: paddle.Tensor, target: float) -> paddle.Tensor:
    """E[(x − target)²]: the official ``MSELoss`` against ones or zeros."""
    return ((x.astype('float32') - target) ** 2).mean()


def bce(logit: paddle.Tensor, target: float) -> paddle.Tensor:
    """E[BCE(σ(logit), target)]: the official ``BCEWithLogitsLoss`` against ones or zeros."""
    logit = logit.astype('float32')
    return F.binary_cross_entropy_with_logits(logit, paddle.full_like(logit, target))


def l1(x: paddle.Tensor, y: paddle.Tensor) -> paddle.Tensor:
    """E|x − y|: the official ``L1Loss``."""
    return (x.astype('float32') - y.astype('float32')).abs().mean()


def d_adv_losses(D, real: paddle.Tensor, fake: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """(E(D(x) − 1)² + E D(G(y))², the same on D's CAM logits η_D): L_lsgan for a discriminator.

    D sees the real batch before the fake one, as in the official step: every training-mode call
    advances D's spectral-norm power iteration, so the order changes the numbers. A discriminator
    without CAM (the ablation's --cam_d False) has a zero CAM term.
    """
    real_logit, real_cam_logit, _ = D(real)
    fake_logit, fake_cam_logit, _ = D(fake)
    if real_cam_logit is None:
        return mse(real_logit, 1.0) + mse(fake_logit, 0.0), paddle.zeros([])
    return mse(real_logit, 1.0) + mse(fake_logit, 0.0), mse(real_cam_logit, 1.0) + mse(fake_cam_logit, 0.0)


def g_adv_losses(D, fake: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """(E(D(G(y)) − 1)², the same on η_D): L_lsgan for a generator against D."""
    fake_logit, fake_cam_logit, _ = D(fake)
    return mse(fake_logit, 1.0), paddle.zeros([]) if fake_cam_logit is None else mse(fake_cam_logit, 1.0)


def cam_loss(source_logit, non_source_logit) -> paddle.Tensor:
    """L_cam of a generator G_{s→t}: BCE(η_s(x_s), 1) + BCE(η_s(x_t), 0), i.e. its CAM reads its own
    source domain as 1 and the target domain (the identity input) as 0. Zero without CAM."""
    if source_logit is None:
        return paddle.zeros([])
    return bce(source_logit, 1.0) + bce(non_source_logit, 0.0)


class UGATIT:
    """U-GAT-IT training and testing, configured by the parsed command line (see main.py)."""

    def __init__(self, args):
        self.args = args
        self.light = args.light
        self.model_name = 'UGATIT_light' if self.light else 'UGATIT'
        self.dataset, self.data_root, self.result_dir = args.dataset, args.data_root, args.result_dir

        self.iteration, self.decay_flag, self.batch_size = args.iteration, args.decay_flag, args.batch_size
        self.print_freq, self.save_freq, self.latest_freq = args.print_freq, args.save_freq, args.latest_freq
        self.lr, self.weight_decay, self.seed = args.lr, args.weight_decay, args.seed

        self.adv_weight, self.cycle_weight = args.adv_weight, args.cycle_weight
        self.identity_weight, self.cam_weight = args.identity_weight, args.cam_weight
        self.img_size, self.img_ch = args.img_size, args.img_ch

        self.out_dir = os.path.join(self.result_dir, self.dataset)
        self.model_dir = os.path.join(self.out_dir, 'model')
        self.img_dir = os.path.join(self.out_dir, 'img')
        self.test_dir = os.path.join(self.out_dir, 'test')
        self.start_step = 0          # last completed step (0: none)
        self.nonfinite_steps = 0     # steps skipped for a non-finite loss or gradient, this run
        self.stop_reason = None      # set when a signal stopped training
        self.fingerprint = None      # the training file lists, saved with checkpoints (set by train())
        self.loaded_checkpoint = self.loaded_step = None     # what load_newest loaded

    def arch(self) -> dict:
        return {name: getattr(self.args, name) for name in ARCH_ARGS}

    # ------------------------------------------------------------------ #
    # Model
    # ------------------------------------------------------------------ #
    def build_model(self) -> None:
        """The six networks, both optimisers and the ρ clipper (no data needed)."""
        paddle.seed(self.seed)
        networks = {name: build_network(name, self.arch()) for name in NETWORKS}   # in the official order
        self.G_params = [p for name in ('genA2B', 'genB2A') for p in networks[name].parameters()]
        self.D_params = [p for name in ('disGA', 'disGB', 'disLA', 'disLB') for p in networks[name].parameters()]
        # Adam with coupled L2 weight decay (a float weight_decay in Paddle = torch Adam's). The TF code
        # decays kernels only, and its Adam adds ε to √v (extras/tf_networks.py).
        Adam, adam = paddle.optimizer.Adam, dict(learning_rate=self.lr, beta1=0.5, beta2=0.999, epsilon=1e-8,
                                                 weight_decay=self.weight_decay or None)
        if self.args.arch == 'tf':
            Adam, adam['weight_decay'] = TFAdam, None
            decay_kernels(networks.values(), self.weight_decay)
        optimizers = {'G_optim': Adam(parameters=self.G_params, **adam), 'D_optim': Adam(parameters=self.D_params, **adam)}
        # Every discriminator's spectral-norm u and v: put back when a non-finite D loss skips a step. The TF
        # architecture's spectral norms move u once per update, when told (advance_power_iterations).
        discriminators = [networks[name] for name in ('disGA', 'disGB', 'disLA', 'disLB')]
        self.sn_vectors = [b for D in discriminators for key, b in D.named_buffers() if key.endswith(('weight_u', 'weight_v'))]
        self.tf_spectral_norms = spectral_norms(discriminators)
        # Loss scaling for fp16 (one scaler per optimizer); disabled, a no-op, otherwise.
        fp16 = self.args.amp == 'fp16'
        self.G_scaler = paddle.amp.GradScaler(enable=fp16, init_loss_scaling=2.0 ** 15)
        self.D_scaler = paddle.amp.GradScaler(enable=fp16, init_loss_scaling=2.0 ** 15)
        # ρ of AdaLIN and LIN lives in [0, 1]: clipped after every generator step.
        self.Rho_clipper = RhoClipper(0, 1)
        # Several processes: every network and optimizer wrapped for data parallelism.
        networks, optimizers = distribute(networks, optimizers)
        for name, value in {**networks, **optimizers}.items():
            setattr(self, name, value)

    def networks(self) -> dict:
        """The six bare networks (unwrapped from data parallelism), by official name."""
        return {name: unwrap(getattr(self, name)) for name in NETWORKS}

    def set_mode(self, train: bool, names=NETWORKS) -> None:
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

    def autocast(self):
        """``paddle.amp.auto_cast`` O1 in the --amp dtype (normalisation statistics and losses stay
        float32), or nothing."""
        if self.args.amp == 'off':
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(level='O1', dtype='float16' if self.args.amp == 'fp16' else 'bfloat16')

    # ------------------------------------------------------------------ #
    # One training step
    # ------------------------------------------------------------------ #
    def translate(self, real_A: paddle.Tensor, real_B: paddle.Tensor) -> dict:
        """The six generator forwards of a step, by their official names."""
        fake_A2B, fake_A2B_cam_logit, _ = self.genA2B(real_A)
        fake_B2A, fake_B2A_cam_logit, _ = self.genB2A(real_B)
        fake_A2B2A, _, _ = self.genB2A(fake_A2B)
        fake_B2A2B, _, _ = self.genA2B(fake_B2A)
        fake_A2A, fake_A2A_cam_logit, _ = self.genB2A(real_A)
        fake_B2B, fake_B2B_cam_logit, _ = self.genA2B(real_B)
        return dict(fake_A2B=fake_A2B, fake_B2A=fake_B2A, fake_A2B2A=fake_A2B2A, fake_B2A2B=fake_B2A2B,
                    fake_A2A=fake_A2A, fake_B2B=fake_B2B, fake_A2B_cam_logit=fake_A2B_cam_logit,
                    fake_B2A_cam_logit=fake_B2A_cam_logit, fake_A2A_cam_logit=fake_A2A_cam_logit,
                    fake_B2B_cam_logit=fake_B2B_cam_logit)

    def discriminator_losses(self, real_A, real_B, fake_A2B, fake_B2A) -> dict:
        """Every term of the discriminators' loss, under its official name (fakes detached)."""
        D_ad_loss_GA, D_ad_cam_loss_GA = d_adv_losses(self.disGA, real_A, fake_B2A)
        D_ad_loss_LA, D_ad_cam_loss_LA = d_adv_losses(self.disLA, real_A, fake_B2A)
        D_ad_loss_GB, D_ad_cam_loss_GB = d_adv_losses(self.disGB, real_B, fake_A2B)
        D_ad_loss_LB, D_ad_cam_loss_LB = d_adv_losses(self.disLB, real_B, fake_A2B)
        D_loss_A = self.adv_weight * (D_ad_loss_GA + D_ad_cam_loss_GA + D_ad_loss_LA + D_ad_cam_loss_LA)
        D_loss_B = self.adv_weight * (D_ad_loss_GB + D_ad_cam_loss_GB + D_ad_loss_LB + D_ad_cam_loss_LB)
        D_loss = D_loss_A + D_loss_B
        return dict(D_ad_loss_GA=D_ad_loss_GA, D_ad_cam_loss_GA=D_ad_cam_loss_GA, D_ad_loss_LA=D_ad_loss_LA,
                    D_ad_cam_loss_LA=D_ad_cam_loss_LA, D_ad_loss_GB=D_ad_loss_GB, D_ad_cam_loss_GB=D_ad_cam_loss_GB,
                    D_ad_loss_LB=D_ad_loss_LB, D_ad_cam_loss_LB=D_ad_cam_loss_LB,
                    D_loss_A=D_loss_A, D_loss_B=D_loss_B, D_loss=D_loss)

    def generator_losses(self, real_A, real_B, fake_A2B, fake_B2A, fake_A2B2A, fake_B2A2B, fake_A2A, fake_B2B,
                         fake_A2B_cam_logit, fake_B2A_cam_logit, fake_A2A_cam_logit, fake_B2B_cam_logit) -> dict:
        """Every term of the generators' loss, under its official name."""
        # The bare discriminators: they are frozen here, and a data-parallel wrapper would wait for their gradients.
        disGA, disGB, disLA, disLB = (unwrap(getattr(self, n)) for n in ('disGA', 'disGB', 'disLA', 'disLB'))
        G_ad_loss_GA, G_ad_cam_loss_GA = g_adv_losses(disGA, fake_B2A)
        G_ad_loss_LA, G_ad_cam_loss_LA = g_adv_losses(disLA, fake_B2A)
        G_ad_loss_GB, G_ad_cam_loss_GB = g_adv_losses(disGB, fake_A2B)
        G_ad_loss_LB, G_ad_cam_loss_LB = g_adv_losses(disLB, fake_A2B)
        G_recon_loss_A = l1(fake_A2B2A, real_A)
        G_recon_loss_B = l1(fake_B2A2B, real_B)
        G_identity_loss_A = l1(fake_A2A, real_A)
        G_identity_loss_B = l1(fake_B2B, real_B)
        G_cam_loss_A = cam_loss(fake_B2A_cam_logit, fake_A2A_cam_logit)
        G_cam_loss_B = cam_loss(fake_A2B_cam_logit, fake_B2B_cam_logit)
        G_loss_A = (self.adv_weight * (G_ad_loss_GA + G_ad_cam_loss_GA + G_ad_loss_LA + G_ad_cam_loss_LA)
                    + self.cycle_weight * G_recon_loss_A + self.identity_weight * G_identity_loss_A
                    + self.cam_weight * G_cam_loss_A)
        G_loss_B = (self.adv_weight * (G_ad_loss_GB + G_ad_cam_loss_GB + G_ad_loss_LB + G_ad_cam_loss_LB)
                    + self.cycle_weight * G_recon_loss_B + self.identity_weight * G_identity_loss_B
                    + self.cam_weight * G_cam_loss_B)
        G_loss = G_loss_A + G_loss_B
        return dict(G_ad_loss_GA=G_ad_loss_GA, G_ad_cam_loss_GA=G_ad_cam_loss_GA, G_ad_loss_LA=G_ad_loss_LA,
                    G_ad_cam_loss_LA=G_ad_cam_loss_LA, G_ad_loss_GB=G_ad_loss_GB, G_ad_cam_loss_GB=G_ad_cam_loss_GB,
                    G_ad_loss_LB=G_ad_loss_LB, G_ad_cam_loss_LB=G_ad_cam_loss_LB, G_recon_loss_A=G_recon_loss_A,
                    G_recon_loss_B=G_recon_loss_B, G_identity_loss_A=G_identity_loss_A,
                    G_identity_loss_B=G_identity_loss_B, G_cam_loss_A=G_cam_loss_A, G_cam_loss_B=G_cam_loss_B,
                    G_loss_A=G_loss_A, G_loss_B=G_loss_B, G_loss=G_loss)

    def train_step(self, real_A: paddle.Tensor, real_B: paddle.Tensor) -> dict[str, float]:
        """One discriminator update, one generator update and ρ clipping; returns every loss term.

        Numerically the official step, with less work. The official code calls genA2B(real_A) and
        genB2A(real_B) in the D update and again after D_optim.step() for the G update. A generator's
        output depends only on its weights and input, its weights change only in G_optim.step()
        (after both uses), and its forward changes no state (no running statistics, dropout or
        spectral norm): both calls give the same tensors, so they are computed once. The official D
        loss also back-propagates into both generators, only for G_optim.zero_grad() to discard it;
        updating D on detached fakes gives the same D gradients without that backward pass.
        A step whose loss or gradients are not finite is skipped (``extras.guards``).
        """
        self.set_mode(train=True)
        with self.autocast():
            fakes = self.translate(real_A, real_B)

        # Update D
        self.D_optim.clear_grad()
        restore_power_iterations = snapshot(self.sn_vectors)
        with self.autocast():
            D_losses = self.discriminator_losses(real_A, real_B, fakes['fake_A2B'].detach(), fakes['fake_B2A'].detach())
        self.D_scaler.scale(D_losses['D_loss']).backward()
        if not update_is_finite(D_losses['D_loss'], self.D_params, self.D_scaler):
            self.D_optim.clear_grad()                      # nothing moves, not even spectral norm's u and v
            restore_power_iterations()
            return self.skipped({**D_losses, 'G_loss': paddle.full([], math.nan)})
        self.D_scaler.step(self.D_optim)
        self.D_scaler.update()
        advance_power_iterations(self.tf_spectral_norms)

        # Update G, the discriminators frozen (the official code computes their gradients and discards them)
        self.G_optim.clear_grad()
        with frozen(self.D_params), self.autocast():
            G_losses = self.generator_losses(real_A, real_B, **fakes)
            self.G_scaler.scale(G_losses['G_loss']).backward()
        if not update_is_finite(G_losses['G_loss'], self.G_params, self.G_scaler):
            self.G_optim.clear_grad()                      # D's update (from finite values) stays
            return self.skipped({**D_losses, **G_losses})
        self.G_scaler.step(self.G_optim)
        self.G_scaler.update()
        advance_power_iterations(self.tf_spectral_norms)

        # Clip ρ of AdaLIN and LIN, after the optimizer step
        self.genA2B.apply(self.Rho_clipper)
        self.genB2A.apply(self.Rho_clipper)
        return self.as_floats({**D_losses, **G_losses})

    def as_floats(self, losses: dict) -> dict[str, float]:
        """Loss tensors → floats, averaged over ranks (= the loss of the global batch): one sync."""
        values = mean_over_ranks(paddle.stack([v.reshape([]).astype('float32') for v in losses.values()]))
        return {k: float(v) for k, v in zip(losses, values.numpy())}

    def skipped(self, losses: dict) -> dict[str, float]:
        self.nonfinite_steps += 1
        return self.as_floats(losses)

    # ------------------------------------------------------------------ #
    # Training loop
    # ------------------------------------------------------------------ #
    def train(self) -> None:
        """Train from step 1, or from the newest checkpoint with --resume, up to --iteration.

        One trainer per run folder; stops cleanly on SIGINT/SIGTERM (checkpoint at the current
        step); skips steps whose loss or gradients are not finite, giving up after --max_nan_steps
        in a row.
        """
        check_dataset(self.data_root, self.dataset)
        domains = {d: ImageFolder(os.path.join(self.data_root, self.dataset, d), self.img_size, augment=True,
                                  channels=self.img_ch) for d in ('trainA', 'trainB')}
        self.fingerprint = {d: folder.fingerprint() for d, folder in domains.items()}
        ckpt.check_writable(self.model_dir, need_bytes=self.checkpoint_bytes())
        with ckpt.RunLock(self.out_dir) if rank() == 0 else contextlib.nullcontext():
            for path in ckpt.remove_stale_temporaries(self.model_dir, self.img_dir) if rank() == 0 else []:
                log.warning('removed %s, left by a process killed while writing it', path)
            self.start_step = self.resume_latest() if self.args.resume else self.check_fresh_start()
            if not ranks_agree(self.start_step):
                raise CheckpointError('the ranks resumed at different steps (each rank reads <result_dir>/<dataset>/'
                                      'model: use a filesystem shared by all machines)')
            if self.start_step >= self.iteration:
                log.info('nothing to do: step %d already reached --iteration %d', self.start_step, self.iteration)
                return
            check_folder(self.img_dir)
            grid = self.grid_samples(domains['trainA'], domains['trainB'])
            streams = [self.train_stream(domains[d], stream, self.start_step + 1) for stream, d in enumerate(domains)]
            log.info('training start: steps %d..%d, %s, batch %d, %d+%d train images', self.start_step + 1,
                     self.iteration, self.model_name, self.batch_size, len(domains['trainA']), len(domains['trainB']))
            with StopRequest().installed() as stop:
                self.loop(streams, grid, stop)

    def check_fresh_start(self) -> int:
        """0, after checking that no earlier run would be overwritten (``--demo`` replaces its own)."""
        found = ckpt.candidates(self.model_dir, self.dataset)
        if found and self.args.demo:
            log.warning('replacing the previous demo run in %s', self.model_dir)
            shutil.rmtree(self.model_dir)
        elif found:
            raise CheckpointError(f'{self.model_dir} holds a run (newest checkpoint: step {found[0][0]}): continue it '
                                  f'with --resume True, or start a new one with another --result_dir')
        return 0

    def train_stream(self, dataset: ImageFolder, stream: int, first_step: int):
        sampler = TrainSampler(dataset, self.batch_size, self.seed, stream, first_step, self.iteration)
        return iter(make_loader(dataset, batch_sampler=sampler, num_workers=self.args.num_workers,
                                worker_init_fn=ignore_interrupt))

    def loop(self, streams: list, grid: dict, stop: StopRequest) -> None:
        log_every = max(1, self.print_freq // 10)
        monitor = Monitor(os.path.join(self.out_dir, 'vdl'), self.start_step + 1, self.iteration, log_every,
                          enabled=rank() == 0)
        nan_run = 0
        with contextlib.closing(monitor):
            for step in range(self.start_step + 1, self.iteration + 1):
                lr = self.lr_at(step)
                self.G_optim.set_lr(lr)
                self.D_optim.set_lr(lr)
                real_A, real_B = self.next_batches(streams, step)
                skipped_before = self.nonfinite_steps
                losses = self.train_step(real_A, real_B)
                self.start_step = step
                nan_run = nan_run + 1 if self.nonfinite_steps > skipped_before else 0
                monitor.step(losses, skipped=nan_run > 0)
                if nan_run:
                    self.check_divergence(step, losses, nan_run)
                if step % log_every == 0 or step == self.iteration:
                    monitor.report(step, lr, self.rho_values() if rank() == 0 else {})
                if step % self.print_freq == 0:
                    for direction, image in self.save_grids(step, grid).items():
                        monitor.image(f'grid/{direction}', image, step)
                self.periodic_saves(step)
                if any_rank(stop.signal_name is not None):      # all ranks stop at the same step
                    self.stop_reason = stop.signal_name or 'a signal on another rank'
                    log.warning('stopped by %s at step %d: checkpoint %s; continue with --resume True',
                                self.stop_reason, step, self.save_latest(step))
                    return
        log.info('training finished at step %d: checkpoints in %s', self.iteration, self.model_dir)

    def next_batches(self, streams: list, step: int) -> list:
        """The step's batch of each domain; if loading fails (e.g. the data became unreadable), the
        last completed step is saved before stopping with one line."""
        try:
            return [next(stream)[0] for stream in streams]
        except (SystemError, RuntimeError, ValueError) as e:       # a worker's error arrives as SystemError
            path = self.save_latest(step - 1) if step > 1 else None
            raise CheckpointError(f'loading the training images failed at step {step} ({type(e).__name__}: '
                                  f'{str(e).splitlines()[0] if str(e) else "no message"}); '
                                  + (f'step {step - 1} is saved in {path}: ' if path else '')
                                  + 'check the data, then --resume True') from None

    def check_divergence(self, step: int, losses: dict, nan_run: int) -> None:
        log.warning('step %d: non-finite loss or gradient (D_loss %s, G_loss %s): update skipped (%d in a row, '
                    '%d this run)', step, losses['D_loss'], losses['G_loss'], nan_run, self.nonfinite_steps)
        if nan_run >= self.args.max_nan_steps:
            last = self.newest_checkpoint()
            raise TrainingDiverged(
                f'{nan_run} consecutive steps with non-finite losses or gradients (steps {step - nan_run + 1}-{step}): '
                f'training stopped; the last good checkpoint is {last or "none (none was written)"}: '
                f'lower --lr or check the data, then --resume True')

    def rho_values(self) -> dict[str, np.ndarray]:
        """ρ of every AdaLIN/LIN layer, by 'genA2B.UpBlock1_1.norm1'-style name."""
        return {f'{name}.{key}': layer.rho.numpy() for name in ('genA2B', 'genB2A')
                for key, layer in self.networks()[name].named_sublayers() if hasattr(layer, 'rho')}

    def periodic_saves(self, step: int) -> None:
        if step % self.save_freq == 0:
            self.save(os.path.join(self.model_dir, checkpoint_name(self.dataset, step)), step)
            for path in ckpt.prune(self.model_dir, self.dataset, self.args.keep_ckpt):
                log.info('removed %s (--keep_ckpt %d)', path, self.args.keep_ckpt)
        if step % self.latest_freq == 0 or step == self.iteration:
            self.save_latest(step)

    def save_latest(self, step: int) -> str:
        path = os.path.join(self.model_dir, checkpoint_name(self.dataset, None))
        if (ckpt.read_sidecar(path) or {}).get('step') != step:       # not already saved at this step
            self.save(path, step)
        return path

    # ------------------------------------------------------------------ #
    # Translations with their CAM heatmaps: sample grids and test strips
    # ------------------------------------------------------------------ #
    def grid_samples(self, trainA: ImageFolder, trainB: ImageFolder, n: int = 5) -> dict:
        """Fixed images for the progress grids: n train and n test images per domain.

        The official code draws them from the running training iterators, which shifts the data
        stream at every grid; fixed images keep the stream (and exact resume) intact and show the
        same faces from grid to grid.
        """
        samples = {}
        for domain, train in (('A', trainA), ('B', trainB)):
            test_path = os.path.join(self.data_root, self.dataset, 'test' + domain)
            test = ImageFolder(test_path, self.img_size, channels=self.img_ch) if os.path.isdir(test_path) else train
            images = [train.load(i % len(train)) for i in range(n)] + [test.load(i % len(test)) for i in range(n)]
            samples[domain] = np.stack([test_transform(img, self.img_size) for img in images])
        return samples

    def strip_model(self, direction: str) -> StripModel:
        """Translation, cycle and identity of one direction (the official test sequence)."""
        nets = self.networks()
        return StripModel(nets['genA2B'], nets['genB2A']) if direction == 'A2B' \
            else StripModel(nets['genB2A'], nets['genA2B'])

    @staticmethod
    def strips(real: np.ndarray, outputs: list, img_size: int) -> list[np.ndarray]:
        """The official 7-tile strips (real, CAM, identity, CAM, translation, CAM, cycle), one per image."""
        fake, fake_heatmap, cycle, cycle_heatmap, identity, identity_heatmap = outputs

        def at(heatmap, i):                         # no heatmap without CAM (--cam_g False)
            return None if heatmap is None else heatmap[i]
        return [translation_strip(real[i], identity[i], at(identity_heatmap, i), fake[i], at(fake_heatmap, i),
                                  cycle[i], at(cycle_heatmap, i), img_size) for i in range(real.shape[0])]

    def save_grids(self, step: int, grid: dict) -> dict[str, np.ndarray]:
        """``img/A2B_%07d.png`` and ``img/B2A_%07d.png``: 7 rows × (5 train + 5 test) columns (rank 0)."""
        if rank() != 0:
            return {}
        grids = {}
        self.set_mode(False, ('genA2B', 'genB2A'))
        for direction, domain in (('A2B', 'A'), ('B2A', 'B')):
            outputs = self.strip_model(direction).run_eager(grid[domain])
            grids[direction] = np.concatenate(self.strips(grid[domain], outputs, self.img_size), axis=1)
            path = os.path.join(self.img_dir, f'{direction}_{step:07d}.png')
            try:
                write_image(path, grids[direction])
            except OSError as e:                   # save the step first (if the disk takes it), then stop
                raise CheckpointError(f'could not write {path}: {ckpt.os_reason(e)}; step {step} is saved in '
                                      f'{self.save_latest(step)}: free space, then --resume True') from None
        self.set_mode(True, ('genA2B', 'genB2A'))
        return grids

    # ------------------------------------------------------------------ #
    # Test
    # ------------------------------------------------------------------ #
    def test(self) -> str:
        """Translate testA and testB with the newest checkpoint (rank 0; returns the test folder).

        Writes the official strips ``test/A2B_%d.png`` / ``test/B2A_%d.png`` (numbered from 1) and the
        bare translations ``test/A2B/<stem>.png`` / ``test/B2A/<stem>.png`` (img_size, the input's
        stem) for the metrics, replacing the previous ones, and ``test/info.json`` naming the weights.
        """
        if rank() != 0:
            return self.test_dir
        check_dataset(self.data_root, self.dataset, ('testA', 'testB'))
        self.load_newest(weights_only=True)
        self.set_mode(False)
        shutil.rmtree(self.test_dir, ignore_errors=True)
        for direction, domain in (('A2B', 'testA'), ('B2A', 'testB')):
            data = ImageFolder(os.path.join(self.data_root, self.dataset, domain), self.img_size, channels=self.img_ch)
            n = self.translate_folder(data, direction, check_folder(os.path.join(self.test_dir, direction)),
                                      strip_dir=self.test_dir)
            log.info('%s: %d images → %s', direction, n, os.path.join(self.test_dir, direction))
        with open(os.path.join(self.test_dir, 'info.json'), 'w') as f:
            json.dump({'checkpoint': self.loaded_checkpoint, 'step': self.loaded_step, 'arch': self.arch(),
                       'weights': ckpt.weights_id(self.loaded_checkpoint)}, f, indent=1)
        return self.test_dir

    def translate_folder(self, data: ImageFolder, direction: str, out_dir: str, strip_dir: str | None = None) -> int:
        """Translate every image of ``data`` into ``out_dir/<stem>.png`` and, with ``strip_dir``, the
        official strips ``strip_dir/<direction>_%d.png``. Returns the number of images.

        On the CPU the generators run as a Paddle Inference program on oneDNN kernels (``strip_engine``,
        the same numbers to float rounding, several times faster); elsewhere eagerly.
        """
        self.set_mode(False, ('genA2B', 'genB2A'))
        model = self.strip_model(direction)
        run = strip_engine(model, self.img_ch, self.img_size, bf16=self.args.amp == 'bf16') \
            if paddle.get_device() == 'cpu' else model.run_eager
        batch = 8 if self.args.ch * self.img_size <= 2048 else 1       # docs/performance.md: batching pays only for small models
        bar, n = progress_bar(len(data), desc=direction, unit='img'), 0
        for real, index in make_loader(data, batch_size=batch, num_workers=self.args.num_workers):
            for i, strip in enumerate(self.strips(real.numpy(), run(real.numpy()), self.img_size)):
                n += 1
                if strip_dir is not None:
                    write_image(os.path.join(strip_dir, f'{direction}_{n}.png'), strip)
                write_image(os.path.join(out_dir, data.stem(int(index[i])) + '.png'),
                            strip[4 * self.img_size:5 * self.img_size])                  # tile 5 of 7
            if bar is not None:
                bar.update(real.shape[0])
        if bar is not None:
            bar.close()
        return n

    # ------------------------------------------------------------------ #
    # Checkpoints
    # ------------------------------------------------------------------ #
    def checkpoint_bytes(self) -> int:
        """About the size of one checkpoint: weights plus Adam's two moments, in float32."""
        return 3 * 4 * sum(int(np.prod(p.shape)) for p in self.G_params + self.D_params)

    def stable_param_names(self, *names: str) -> dict[str, str]:
        """Run-specific parameter name → 'genA2B.DownBlock.1.weight'-style stable name."""
        nets = self.networks()
        return {p.name: f'{name}.{key}' for name in names for key, p in nets[name].named_parameters()}

    def save(self, path: str, step: int) -> None:
        """Write one checkpoint (rank 0, atomically; never when a parameter is not finite): the six
        networks (spectral-norm u/v included), both optimisers, the step, the learning rate, the data
        fingerprint, the architecture and the arguments."""
        if rank() != 0:
            return
        if not all_finite(self.G_params + self.D_params):
            log.error('not writing %s: the parameters at step %d are not finite', path, step)
            return
        state = {name: net.state_dict() for name, net in self.networks().items()}
        state['G_optim'] = ckpt.portable_optimizer_state(self.G_optim, self.stable_param_names('genA2B', 'genB2A'))
        state['D_optim'] = ckpt.portable_optimizer_state(
            self.D_optim, self.stable_param_names('disGA', 'disGB', 'disLA', 'disLB'))
        if self.G_scaler.is_enable():
            state['G_scaler'], state['D_scaler'] = self.G_scaler.state_dict(), self.D_scaler.state_dict()
        state.update(format=ckpt.FORMAT, step=int(step), lr=self.lr_at(max(step, 1)), arch=self.arch(),
                     args=vars(self.args).copy(), seed=self.seed, data=self.fingerprint)
        started = time.time()
        size = ckpt.write_checkpoint(path, state)
        log.info('saved %s (step %d, %.2f GB, %.1fs)', path, step, size / 1e9, time.time() - started)

    def load(self, path: str, weights_only: bool = False) -> int:
        """Load a checkpoint written by ``save`` or converted by convert.py; returns its step.

        Checks the architecture first (one-line ``ArchitectureMismatch``), then every network's keys
        and shapes. Without ``weights_only`` also restores the optimisers (fresh Adam state, with a log
        line, when the checkpoint has none: converted weights). No random state is restored: after
        the initialisation nothing draws from Paddle's generator (the data stream has its own seeds),
        which is also why a run resumes on any number of devices.
        """
        return self.load_state(path, ckpt.read_checkpoint(path), weights_only)

    def load_state(self, path: str, state: dict, weights_only: bool = False) -> int:
        ckpt.check_architecture(path, state.get('arch'), self.arch())
        for name, net in self.networks().items():
            if name not in state and name.startswith('dis') and 'genA2B' in state:
                if weights_only:                            # a generators-only checkpoint: test, infer, export
                    continue
                raise CheckpointError(f'{path} holds the generators only (a TF test-phase checkpoint or convert.py '
                                      f'--generators_only): it tests, infers and exports; training needs a full one')
            if name not in state:
                raise CheckpointError(f'{path} has no {name}: not a U-GAT-IT checkpoint')
            _check_state_shapes(path, name, net, state[name])         # set_state_dict only warns
            net.set_state_dict(state[name])
        if not weights_only:
            if 'G_optim' in state and 'D_optim' in state:
                ckpt.load_portable_optimizer_state(self.G_optim, state['G_optim'],
                                                   self.stable_param_names('genA2B', 'genB2A'))
                ckpt.load_portable_optimizer_state(self.D_optim, state['D_optim'],
                                                   self.stable_param_names('disGA', 'disGB', 'disLA', 'disLB'))
            else:
                log.info('%s holds no optimizer state (converted weights?): Adam starts fresh', path)
            if self.G_scaler.is_enable() and 'G_scaler' in state:
                self.G_scaler.load_state_dict(state['G_scaler'])
                self.D_scaler.load_state_dict(state['D_scaler'])
            if state.get('data') and self.fingerprint and state['data'] != self.fingerprint:
                log.warning('the training images changed since %s was written: the data order differs '
                            'from an uninterrupted run', path)
        return int(state.get('step', 0))

    def newest_checkpoint(self) -> str | None:
        """The checkpoint with the highest step (periodic or ``latest``), without loading any."""
        found = ckpt.candidates(self.model_dir, self.dataset)
        return found[0][1] if found else None

    def load_newest(self, weights_only: bool = True) -> int:
        """Load the newest checkpoint that loads (a corrupt one falls back to the previous); its step."""
        for path, state in ckpt.loadable(self.model_dir, self.dataset):
            self.loaded_checkpoint, self.loaded_step = path, self.load_state(path, state, weights_only)
            log.info('loaded %s (step %d)', path, self.loaded_step)
            return self.loaded_step
        raise CheckpointError(f'no checkpoint in {self.model_dir}: train first (--phase train), or convert '
                              f'official weights with convert.py')

    def resume_latest(self) -> int:
        """--resume: the step of the newest checkpoint that loads, or 0 when the run has none yet."""
        if not ckpt.candidates(self.model_dir, self.dataset):
            log.info('--resume: no checkpoint in %s yet, starting from step 1', self.model_dir)
            return 0
        step = self.load_newest(weights_only=False)
        log.info('resumed from %s at step %d', self.loaded_checkpoint, step)
        return step


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
