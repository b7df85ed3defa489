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

from dataset import DatasetError, ImageFolder, TrainSampler, batches, check_dataset, grid_images, write_image
from extras import checkpoints as ckpt
from extras.amp import autocast, grad_scaler
from extras.checkpoints import CheckpointError, checkpoint_name
from extras.deploy import StripModel, translate_folder
from extras.distributed import any_rank, distribute, mean_over_ranks, rank, ranks_agree, unwrap
from extras.guards import NonFiniteStreak, StopRequest, all_finite, frozen, ignore_interrupt, snapshot, update_is_finite
from extras.monitor import Monitor, rho_values
from extras.tf_networks import TFAdam, advance_power_iterations, build_tf_network, decay_kernels, spectral_norms
from networks import DISCRIMINATORS, GENERATORS, NETWORKS, RhoClipper, build_network as build_pytorch_network
from utils import check_folder, translation_strips

log = logging.getLogger('ugatit')

# The arguments that fix the networks' shapes: a checkpoint loads only into the same ones.
ARCH_ARGS = ('arch', 'light', 'img_size', 'ch', 'n_res', 'n_dis', 'img_ch', 'norm', 'cam_g', 'cam_d', 'self_attn',
             'smoothing')


def build_network(name: str, arch: dict) -> paddle.nn.Layer:
    """One of the six ``NETWORKS`` for an architecture (a dict of ``ARCH_ARGS``): the official PyTorch
    code's, or with ``arch='tf'`` the authors' TensorFlow code's, to hold their released model."""
    return (build_tf_network if arch.get('arch', 'pytorch') == 'tf' else build_pytorch_network)(name, arch)


# ---- Losses: one helper per formula, in float32 (also under mixed precision) -------------------
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
    cam = paddle.zeros([]) if real_cam_logit is None else mse(real_cam_logit, 1.0) + mse(fake_cam_logit, 0.0)
    return mse(real_logit, 1.0) + mse(fake_logit, 0.0), cam


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

    # ---- Model -------------------------------------------------------------------------------------
    def build_model(self) -> None:
        """The six networks, both optimisers and the ρ clipper (no data needed)."""
        paddle.seed(self.seed)
        nets = {name: build_network(name, self.arch()) for name in NETWORKS}   # in the official order
        self.G_params = [p for name in GENERATORS for p in nets[name].parameters()]
        self.D_params = [p for name in DISCRIMINATORS for p in nets[name].parameters()]
        # Adam with coupled L2 weight decay (a float weight_decay in Paddle = torch Adam's). The TF code
        # decays kernels only, and its Adam adds ε to √v (extras/tf_networks.py).
        Adam, adam = paddle.optimizer.Adam, dict(learning_rate=self.lr, beta1=0.5, beta2=0.999, epsilon=1e-8,
                                                 weight_decay=self.weight_decay or None)
        if self.args.arch == 'tf':
            Adam, adam['weight_decay'] = TFAdam, None
            decay_kernels(nets.values(), self.weight_decay)
        optimizers = {'G_optim': Adam(parameters=self.G_params, **adam), 'D_optim': Adam(parameters=self.D_params, **adam)}
        # Every discriminator's spectral-norm u and v: put back when a non-finite D loss skips a step. The TF
        # architecture's spectral norms move u once per update, when told (advance_power_iterations).
        discriminators = [nets[name] for name in DISCRIMINATORS]
        self.sn_vectors = [b for D in discriminators for key, b in D.named_buffers() if key.endswith(('weight_u', 'weight_v'))]
        self.tf_spectral_norms = spectral_norms(discriminators)
        # Loss scaling for --amp fp16 (one scaler per optimizer); disabled, a no-op, otherwise.
        self.G_scaler, self.D_scaler = grad_scaler(self.args.amp), grad_scaler(self.args.amp)
        # ρ of AdaLIN and LIN lives in [0, 1]: clipped after every generator step.
        self.Rho_clipper = RhoClipper(0, 1)
        # Several processes: every network and optimizer wrapped for data parallelism.
        nets, optimizers = distribute(nets, optimizers)
        for name, value in {**nets, **optimizers}.items():
            setattr(self, name, value)

    def networks(self) -> dict:
        """The six bare networks (unwrapped from data parallelism), by official name."""
        return {name: unwrap(getattr(self, name)) for name in NETWORKS}

    def optimizers(self) -> dict:
        return {'G_optim': self.G_optim, 'D_optim': self.D_optim}

    def scalers(self) -> dict:
        return {'G_scaler': self.G_scaler, 'D_scaler': self.D_scaler}

    def set_mode(self, train: bool, names=NETWORKS) -> None:
        for name in names:
            getattr(self, name).train() if train else getattr(self, name).eval()

    def lr_at(self, step: int) -> float:
        """Learning rate of ``step`` (1-based): constant, then linear decay to 0 over the second half.

        Equals the official per-step decrement lr −= lr₀/(T//2) for every step > T//2, as a pure
        function of the step so that a resumed run gets it exactly; except that it stops at 0, where
        the official one reaches −lr₀/(T//2) at the last step of an odd T.
        """
        half = self.iteration // 2
        if not self.decay_flag or step <= half or half == 0:
            return self.lr
        return self.lr * max(0.0, 1.0 - (step - half) / half)

    # ---- One training step -------------------------------------------------------------------------
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
        disGA, disGB, disLA, disLB = (unwrap(getattr(self, n)) for n in DISCRIMINATORS)
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
        with autocast(self.args.amp):
            fakes = self.translate(real_A, real_B)

        # Update D
        self.D_optim.clear_grad()
        restore_power_iterations = snapshot(self.sn_vectors)
        with autocast(self.args.amp):
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
        with frozen(self.D_params), autocast(self.args.amp):
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

    # ---- Training loop -----------------------------------------------------------------------------
    def train(self) -> None:
        """Train from step 1, or from the newest checkpoint with --resume, up to --iteration: one trainer
        per run folder, a clean stop on SIGINT/SIGTERM, non-finite steps skipped (docs/robustness.md)."""
        check_dataset(self.data_root, self.dataset)
        domains = {d: ImageFolder(os.path.join(self.data_root, self.dataset, d), self.img_size, augment=True,
                                  channels=self.img_ch) for d in ('trainA', 'trainB')}
        self.fingerprint = {d: folder.fingerprint() for d, folder in domains.items()}
        ckpt.check_writable(self.model_dir, need_bytes=3 * ckpt.state_bytes(self.G_params + self.D_params))
        with ckpt.RunLock(self.out_dir) if rank() == 0 else contextlib.nullcontext():
            for path in ckpt.remove_stale_temporaries(self.model_dir, self.img_dir) if rank() == 0 else []:
                log.warning('removed %s, left by a process killed while writing it', path)
            self.start_step = (self.resume_latest() if self.args.resume
                               else ckpt.fresh_start(self.model_dir, self.dataset, replace_demo=self.args.demo))
            if not ranks_agree(self.start_step):
                raise CheckpointError('the ranks resumed at different steps: use a --result_dir all machines share')
            if self.start_step >= self.iteration:
                log.info('nothing to do: step %d already reached --iteration %d', self.start_step, self.iteration)
                return
            check_folder(self.img_dir)
            grid = {d[-1]: grid_images(domains[d], os.path.join(self.data_root, self.dataset, 'test' + d[-1]))
                    for d in domains}
            log.info('training start: steps %d..%d, %s, batch %d, %d+%d train images', self.start_step + 1,
                     self.iteration, self.model_name, self.batch_size, len(domains['trainA']), len(domains['trainB']))
            with StopRequest().installed() as stop, contextlib.ExitStack() as loaders:   # workers end on any exit
                streams = [loaders.enter_context(self.train_stream(domains[d], i)) for i, d in enumerate(domains)]
                self.loop(streams, grid, stop)

    def train_stream(self, dataset: ImageFolder, stream: int):
        """The batches of one domain from step start_step + 1 on (a context: its workers end with it)."""
        sampler = TrainSampler(dataset, self.batch_size, self.seed, stream, self.start_step + 1, self.iteration)
        return batches(dataset, batch_sampler=sampler, num_workers=self.args.num_workers, worker_init_fn=ignore_interrupt)

    def loop(self, streams: list, grid: dict, stop: StopRequest) -> None:
        log_every = max(1, self.print_freq // 10)
        monitor = Monitor(os.path.join(self.out_dir, 'vdl'), self.start_step + 1, self.iteration, log_every,
                          enabled=rank() == 0)
        streak = NonFiniteStreak(self.args.max_nan_steps, lambda: ckpt.newest(self.model_dir, self.dataset))
        with contextlib.closing(monitor):
            for step in range(self.start_step + 1, self.iteration + 1):
                lr = self.lr_at(step)
                self.G_optim.set_lr(lr)
                self.D_optim.set_lr(lr)
                real_A, real_B = self.next_batches(streams, step)
                skipped_before = self.nonfinite_steps
                losses = self.train_step(real_A, real_B)
                self.start_step, skipped = step, self.nonfinite_steps > skipped_before
                monitor.step(losses, skipped=skipped)
                streak.record(step, losses, skipped=skipped)
                if step % log_every == 0 or step == self.iteration:
                    monitor.report(step, lr, rho_values(self.networks()) if rank() == 0 else {})
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
            loaded = [next(stream) for stream in streams]
            if any(int(index.min()) < 0 for _, index in loaded):
                raise DatasetError('no image of a training domain is readable any more')
            return [images for images, _ in loaded]
        except (SystemError, RuntimeError, ValueError) as e:       # a worker's error arrives as SystemError
            path = self.save_latest(step - 1) if step > 1 else None
            raise CheckpointError(f'loading the training images failed at step {step} ({type(e).__name__}: '
                                  f'{str(e).splitlines()[0] if str(e) else "no message"}); '
                                  + (f'step {step - 1} is saved in {path}: ' if path else '')
                                  + 'check the data, then --resume True') from None

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

    # ---- Translations with their CAM heatmaps: sample grids and test strips ------------------------
    def strip_model(self, direction: str) -> StripModel:
        """Translation, cycle and identity of one direction (the official test sequence)."""
        nets = self.networks()
        return StripModel(nets['genA2B'], nets['genB2A']) if direction == 'A2B' \
            else StripModel(nets['genB2A'], nets['genA2B'])

    def save_grids(self, step: int, grid: dict) -> dict[str, np.ndarray]:
        """``img/A2B_%07d.png`` and ``img/B2A_%07d.png``: 7 rows × (5 train + 5 test) columns (rank 0)."""
        if rank() != 0:
            return {}
        grids = {}
        self.set_mode(False, GENERATORS)
        for direction, domain in (('A2B', 'A'), ('B2A', 'B')):
            outputs = self.strip_model(direction).run_eager(grid[domain])
            grids[direction] = np.concatenate(translation_strips(grid[domain], outputs, self.img_size), axis=1)
            path = os.path.join(self.img_dir, f'{direction}_{step:07d}.png')
            try:
                write_image(path, grids[direction])
            except OSError as e:                   # save the step first (if the disk takes it), then stop
                raise CheckpointError(f'could not write {path}: {ckpt.os_reason(e)}; step {step} is saved in '
                                      f'{self.save_latest(step)}: free space, then --resume True') from None
        self.set_mode(True, GENERATORS)
        return grids

    # ---- Test --------------------------------------------------------------------------------------
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
        """Translate every image of ``data`` into ``out_dir/<stem>.png`` (and the official strips into
        ``strip_dir``), on a Paddle Inference engine on the CPU (extras/deploy.py); the image count."""
        self.set_mode(False, GENERATORS)
        return translate_folder(self.strip_model(direction), data, direction, out_dir, strip_dir, bf16=self.args.amp == 'bf16',
                                small_model=self.args.ch * self.img_size <= 2048, num_workers=self.args.num_workers)

    # ---- Checkpoints -------------------------------------------------------------------------------
    def save(self, path: str, step: int) -> None:
        """Write one checkpoint (rank 0, atomically; never when a parameter is not finite): the six
        networks (spectral-norm u/v included), both optimisers, the step, the learning rate, the data
        fingerprint, the architecture and the arguments."""
        if rank() != 0:
            return
        if not all_finite(self.G_params + self.D_params):
            log.error('not writing %s: the parameters at step %d are not finite', path, step)
            return
        state = ckpt.training_state(self.networks(), self.optimizers(), self.scalers())
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
        ckpt.load_networks(path, state, self.networks(), generators_only_ok=weights_only)
        if not weights_only:
            ckpt.load_training_state(path, state, self.networks(), self.optimizers(), self.scalers())
            if state.get('data') and self.fingerprint and state['data'] != self.fingerprint:
                log.warning('the training images changed since %s was written: the data order differs '
                            'from an uninterrupted run', path)
        return int(state.get('step', 0))

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
