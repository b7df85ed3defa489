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

import io
import json
import logging
import os
import re
import time
from typing import Iterable

import numpy as np
import paddle
import paddle.nn.functional as F

from dataset import ImageFolder, TrainSampler, check_dataset, make_loader, test_transform
from networks import Discriminator, ResnetGenerator, RhoClipper
from utils import atomic_write, check_folder, translation_strip, write_image

log = logging.getLogger('ugatit')

NETWORKS = ('genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB')
# Arguments that fix the shapes of the networks: a checkpoint only loads into the same ones.
ARCH_ARGS = ('light', 'img_size', 'ch', 'n_res', 'n_dis', 'img_ch')
CHECKPOINT_FORMAT = 'ugatit-paddle/1'


# --------------------------------------------------------------------------- #
# Loss helpers: one per formula
# --------------------------------------------------------------------------- #
def mse_to(x: paddle.Tensor, target: float) -> paddle.Tensor:
    """Least-squares GAN term E[(x − target)²] (the official ``MSELoss`` against ones/zeros)."""
    return ((x - target) ** 2).mean()


def bce_to(logit: paddle.Tensor, target: float) -> paddle.Tensor:
    """E[BCE(σ(logit), target)] (the official ``BCEWithLogitsLoss`` against ones/zeros)."""
    return F.binary_cross_entropy_with_logits(logit, paddle.full_like(logit, target))


def d_adv_losses(D, real: paddle.Tensor, fake: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Discriminator LSGAN loss on the patch logits and on the CAM logits.

        adv = E(D(x) − 1)² + E D(G(y))²,   cam = E(η_D(x) − 1)² + E η_D(G(y))²

    D sees the real batch before the fake one, as in the official step: every training-mode
    call advances D's spectral-norm power iteration, so the order changes the numbers.
    """
    real_logit, real_cam_logit, _ = D(real)
    fake_logit, fake_cam_logit, _ = D(fake)
    return (mse_to(real_logit, 1.0) + mse_to(fake_logit, 0.0),
            mse_to(real_cam_logit, 1.0) + mse_to(fake_cam_logit, 0.0))


def g_adv_losses(D, fake: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Generator LSGAN loss against D: adv = E(D(G(y)) − 1)², cam = E(η_D(G(y)) − 1)²."""
    fake_logit, fake_cam_logit, _ = D(fake)
    return mse_to(fake_logit, 1.0), mse_to(fake_cam_logit, 1.0)


def l1(x: paddle.Tensor, y: paddle.Tensor) -> paddle.Tensor:
    """E|x − y| (the official ``L1Loss``)."""
    return (x - y).abs().mean()


# --------------------------------------------------------------------------- #
# Checkpoint helpers
# --------------------------------------------------------------------------- #
def checkpoint_name(dataset: str, step: int | None) -> str:
    """``<dataset>_params_%07d.pdparams`` (official naming), or ``..._latest`` for step None."""
    return f'{dataset}_params_latest.pdparams' if step is None else f'{dataset}_params_{step:07d}.pdparams'


def list_checkpoints(model_dir: str, dataset: str) -> list[str]:
    """Periodic checkpoints of ``dataset`` in ``model_dir``, oldest first (by the step in the name)."""
    if not os.path.isdir(model_dir):
        return []
    pattern = re.compile(re.escape(dataset) + r'_params_(\d+)\.pdparams$')
    found = [(int(m.group(1)), name) for name in os.listdir(model_dir) if (m := pattern.match(name))]
    return [os.path.join(model_dir, name) for _, name in sorted(found)]


def _unwrap(layer):
    """The bare network inside a DataParallel / fleet wrapper."""
    return getattr(layer, '_layers', layer)


def _optimizer_state(optim, names: dict[str, str]) -> dict:
    """The optimizer state with Paddle's run-specific parameter names replaced by stable ones.

    Paddle names accumulators after auto-generated parameter names ('conv2d_3.w_0_moment1_0'),
    which depend on how many layers the process built before; a checkpoint must not.
    """
    state = {}
    for key, value in optim.state_dict().items():
        owner = max((p for p in names if key.startswith(p + '_')), key=len, default=None)
        state[key if owner is None else names[owner] + key[len(owner):]] = value
    return state


def _load_optimizer_state(optim, state: dict, names: dict[str, str]) -> None:
    back = {stable: run for run, stable in names.items()}
    renamed = {}
    for key, value in state.items():
        owner = max((s for s in back if key.startswith(s + '_')), key=len, default=None)
        renamed[key if owner is None else back[owner] + key[len(owner):]] = value
    optim.set_state_dict(renamed)


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
        self.latest_freq = getattr(args, 'latest_freq', 1000)
        self.num_workers = getattr(args, 'num_workers', 0)
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
        self.resume = args.resume

        self.out_dir = os.path.join(self.result_dir, self.dataset)
        self.model_dir = os.path.join(self.out_dir, 'model')
        self.img_dir = os.path.join(self.out_dir, 'img')
        self.test_dir = os.path.join(self.out_dir, 'test')
        self.start_step = 0        # last completed step (0: none)

    # ------------------------------------------------------------------ #
    # Model
    # ------------------------------------------------------------------ #
    def build_model(self) -> None:
        """Build the six networks, both optimisers and the ρ clipper (no data needed)."""
        paddle.seed(self.seed)
        gen = dict(input_nc=self.img_ch, output_nc=self.img_ch, ngf=self.ch, n_blocks=self.n_res,
                   img_size=self.img_size, light=self.light)
        self.genA2B = ResnetGenerator(**gen)
        self.genB2A = ResnetGenerator(**gen)
        # The official code hard-codes n_layers 7 (global) and 5 (local) and ignores --n_dis;
        # they equal n_dis + 1 and n_dis − 1 for its default n_dis = 6, the TF code's meaning.
        self.disGA = Discriminator(self.img_ch, self.ch, n_layers=self.n_dis + 1)
        self.disGB = Discriminator(self.img_ch, self.ch, n_layers=self.n_dis + 1)
        self.disLA = Discriminator(self.img_ch, self.ch, n_layers=self.n_dis - 1)
        self.disLB = Discriminator(self.img_ch, self.ch, n_layers=self.n_dis - 1)

        # Adam with coupled L2 weight decay (a float weight_decay in Paddle = torch Adam's).
        adam = dict(learning_rate=self.lr, beta1=0.5, beta2=0.999, epsilon=1e-8,
                    weight_decay=self.weight_decay or None)
        self.G_optim = paddle.optimizer.Adam(parameters=self._params('genA2B', 'genB2A'), **adam)
        self.D_optim = paddle.optimizer.Adam(parameters=self._params('disGA', 'disGB', 'disLA', 'disLB'), **adam)
        # ρ of AdaLIN/ILN lives in [0, 1]; clip after every generator step.
        self.Rho_clipper = RhoClipper(0, 1)

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
        fake_A2B, fake_A2B_cam_logit, _ = self.genA2B(real_A)
        fake_B2A, fake_B2A_cam_logit, _ = self.genB2A(real_B)
        fake_A2B2A, _, _ = self.genB2A(fake_A2B)
        fake_B2A2B, _, _ = self.genA2B(fake_B2A)
        fake_A2A, fake_A2A_cam_logit, _ = self.genB2A(real_A)
        fake_B2B, fake_B2B_cam_logit, _ = self.genA2B(real_B)

        # Update D
        self.D_optim.clear_grad()
        d_losses = self._d_losses(real_A, real_B, fake_A2B.detach(), fake_B2A.detach())
        d_losses['D_loss'].backward()
        self.D_optim.step()

        # Update G
        self.G_optim.clear_grad()
        g_losses = self._g_losses(
            real_A, real_B, fake_A2B, fake_B2A, fake_A2B2A, fake_B2A2B, fake_A2A, fake_B2B,
            fake_A2B_cam_logit, fake_B2A_cam_logit, fake_A2A_cam_logit, fake_B2B_cam_logit)
        g_losses['G_loss'].backward()
        self.G_optim.step()
        # D's parameters also received gradients from the G loss: drop them now.
        self.D_optim.clear_grad()

        # Clip ρ of AdaLIN and ILN, after the optimizer step.
        self.genA2B.apply(self.Rho_clipper)
        self.genB2A.apply(self.Rho_clipper)

        losses = {**d_losses, **g_losses}
        values = paddle.stack([v.reshape([]) for v in losses.values()]).numpy()   # one device sync
        return {k: float(v) for k, v in zip(losses, values)}

    def _d_losses(self, real_A, real_B, fake_A2B, fake_B2A) -> dict:
        losses = {}
        for domain, real, fake in (('A', real_A, fake_B2A), ('B', real_B, fake_A2B)):
            for scale in ('G', 'L'):
                adv, cam = d_adv_losses(getattr(self, f'dis{scale}{domain}'), real, fake)
                losses[f'D_ad_loss_{scale}{domain}'] = adv
                losses[f'D_ad_cam_loss_{scale}{domain}'] = cam
            losses[f'D_loss_{domain}'] = self.adv_weight * sum(
                losses[f'D_ad{kind}_loss_{scale}{domain}'] for scale in 'GL' for kind in ('', '_cam'))
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
                adv, cam = g_adv_losses(getattr(self, f'dis{scale}{domain}'), fake)
                losses[f'G_ad_loss_{scale}{domain}'] = adv
                losses[f'G_ad_cam_loss_{scale}{domain}'] = cam
            losses[f'G_recon_loss_{domain}'] = l1(cycled, real)
            losses[f'G_identity_loss_{domain}'] = l1(identity, real)
            # The generator into X must read its input as "from the other domain" (1) and X as 0.
            losses[f'G_cam_loss_{domain}'] = bce_to(cam_source, 1.0) + bce_to(cam_target, 0.0)
            losses[f'G_loss_{domain}'] = (
                self.adv_weight * sum(losses[f'G_ad{kind}_loss_{scale}{domain}']
                                      for scale in 'GL' for kind in ('', '_cam'))
                + self.cycle_weight * losses[f'G_recon_loss_{domain}']
                + self.identity_weight * losses[f'G_identity_loss_{domain}']
                + self.cam_weight * losses[f'G_cam_loss_{domain}'])
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
        return iter(make_loader(dataset, batch_sampler=sampler, num_workers=self.num_workers))

    # ------------------------------------------------------------------ #
    # Training loop
    # ------------------------------------------------------------------ #
    def train(self) -> None:
        check_dataset(self.data_root, self.dataset)
        trainA, trainB = self._domain('trainA', True), self._domain('trainB', True)
        for folder in (self.model_dir, self.img_dir):
            check_folder(folder)
        if self.resume:
            self.resume_latest()
        first = self.start_step + 1
        if first > self.iteration:
            log.info('nothing to do: step %d already reached --iteration %d', self.start_step, self.iteration)
            return
        grid = self._grid_samples(trainA, trainB)
        iter_A = self._train_stream(trainA, 0, first)
        iter_B = self._train_stream(trainB, 1, first)

        log_every = max(1, self.print_freq // 10)
        log.info('training start: steps %d..%d, %s, batch %d, %d+%d train images',
                 first, self.iteration, self.model_name, self.batch_size, len(trainA), len(trainB))
        start_time = interval_time = time.time()
        sums, count = {}, 0
        for step in range(first, self.iteration + 1):
            lr = self.lr_at(step)
            self.G_optim.set_lr(lr)
            self.D_optim.set_lr(lr)
            real_A, real_B = next(iter_A)[0], next(iter_B)[0]
            losses = self.train_step(real_A, real_B)
            self.start_step = step
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1

            if step % log_every == 0 or step == self.iteration:
                now = time.time()
                log.info('[%7d/%7d] time %.1fs  %.2f it/s  d_loss %.4f  g_loss %.4f  lr %.2e',
                         step, self.iteration, now - start_time, count / max(now - interval_time, 1e-9),
                         sums['D_loss'] / count, sums['G_loss'] / count, lr)
                sums, count, interval_time = {}, 0, now
            if step % self.print_freq == 0:
                self.save_grids(step, grid)
            if step % self.save_freq == 0:
                self.save(os.path.join(self.model_dir, checkpoint_name(self.dataset, step)), step)
            if step % self.latest_freq == 0 or step == self.iteration:
                self.save(os.path.join(self.model_dir, checkpoint_name(self.dataset, None)), step)
        log.info('training finished at step %d: checkpoints in %s', self.iteration, self.model_dir)

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

    @paddle.no_grad()
    def translate_with_cam(self, real: paddle.Tensor, direction: str) -> list[np.ndarray]:
        """The official 7-tile strips (real, CAM, identity, CAM, translation, CAM, cycle), one per image."""
        forward, backward = (self.genA2B, self.genB2A) if direction == 'A2B' else (self.genB2A, self.genA2B)
        fake, _, fake_heatmap = forward(real)
        cycle, _, cycle_heatmap = backward(fake)
        identity, _, identity_heatmap = backward(real)
        return [translation_strip(real[i], identity[i], identity_heatmap[i], fake[i], fake_heatmap[i],
                                  cycle[i], cycle_heatmap[i], self.img_size) for i in range(real.shape[0])]

    def save_grids(self, step: int, grid: dict) -> None:
        """``img/A2B_%07d.png`` and ``img/B2A_%07d.png``: 7 rows × (5 train + 5 test) columns."""
        self.set_mode(False, ('genA2B', 'genB2A'))
        for direction, domain in (('A2B', 'A'), ('B2A', 'B')):
            strips = self.translate_with_cam(grid[domain], direction)
            write_image(os.path.join(self.img_dir, f'{direction}_{step:07d}.png'), np.concatenate(strips, axis=1))
        self.set_mode(True, ('genA2B', 'genB2A'))

    # ------------------------------------------------------------------ #
    # Test
    # ------------------------------------------------------------------ #
    def test(self) -> str:
        """Translate testA and testB with the newest checkpoint.

        Writes the official strips ``test/A2B_%d.png`` / ``test/B2A_%d.png`` (numbered from 1)
        and the bare translations ``test/A2B/<stem>.png`` / ``test/B2A/<stem>.png`` (input size
        img_size, same stem as the input) for metric computation. Returns the test folder.
        """
        check_dataset(self.data_root, self.dataset, ('testA', 'testB'))
        path = self.newest_checkpoint()
        if path is None:
            raise FileNotFoundError(f'no checkpoint in {self.model_dir}: train first '
                                    f'(--phase train) or convert official weights with convert.py')
        step = self.load(path, weights_only=True)
        log.info('testing with %s (step %d)', path, step)
        self.set_mode(False)
        for direction, domain in (('A2B', 'testA'), ('B2A', 'testB')):
            data = ImageFolder(os.path.join(self.data_root, self.dataset, domain), self.img_size,
                               channels=self.img_ch)
            n = self.translate_folder(data, direction, check_folder(os.path.join(self.test_dir, direction)),
                                      strip_dir=self.test_dir)
            log.info('%s: %d images → %s', direction, n, os.path.join(self.test_dir, direction))
        return self.test_dir

    def translate_folder(self, data: ImageFolder, direction: str, out_dir: str, strip_dir: str | None = None) -> int:
        """Translate every image of ``data``: ``out_dir/<stem>.png`` and, with ``strip_dir``, the
        official strips ``strip_dir/<direction>_%d.png``. Returns the number of images."""
        self.set_mode(False, ('genA2B', 'genB2A'))
        loader = make_loader(data, batch_size=1, num_workers=self.num_workers)
        n = 0
        for real, index in loader:
            for i, strip in enumerate(self.translate_with_cam(real, direction)):
                n += 1
                if strip_dir is not None:
                    write_image(os.path.join(strip_dir, f'{direction}_{n}.png'), strip)
                translation = strip[4 * self.img_size:5 * self.img_size]      # tile 5 of 7
                write_image(os.path.join(out_dir, data.stem(int(index[i])) + '.png'), translation)
        return n

    # ------------------------------------------------------------------ #
    # Checkpoints
    # ------------------------------------------------------------------ #
    def arch(self) -> dict:
        return {name: getattr(self.args, name) for name in ARCH_ARGS}

    def save(self, path: str, step: int) -> None:
        """Write one checkpoint dict (networks, optimisers, step, arguments), atomically."""
        state = {name: _unwrap(net).state_dict() for name, net in self.networks().items()}
        state['G_optim'] = _optimizer_state(self.G_optim, self._stable_param_names('genA2B', 'genB2A'))
        state['D_optim'] = _optimizer_state(self.D_optim, self._stable_param_names('disGA', 'disGB', 'disLA', 'disLB'))
        state.update(format=CHECKPOINT_FORMAT, step=int(step), lr=self.lr_at(max(step, 1)),
                     arch=self.arch(), args=vars(self.args).copy(), seed=self.seed)
        buffer = io.BytesIO()
        paddle.save(state, buffer)
        atomic_write(path, buffer.getvalue())

    def load(self, path: str, weights_only: bool = False) -> int:
        """Load a checkpoint written by ``save`` (or converted by convert.py); returns its step."""
        state = paddle.load(path)
        arch = state.get('arch')
        if arch is not None:
            differing = [f'--{k} {arch[k]} (checkpoint) vs {getattr(self.args, k)} (now)'
                         for k in ARCH_ARGS if k in arch and arch[k] != getattr(self.args, k)]
            if differing:
                raise ValueError(f'{path} was trained with other network arguments: ' + '; '.join(differing))
        for name, net in self.networks().items():
            missing, unexpected = _unwrap(net).set_state_dict(state[name])
            if missing or unexpected:
                raise ValueError(f'{path}: {name} does not match (missing {missing}, unexpected {unexpected})')
        if not weights_only and 'G_optim' in state:
            _load_optimizer_state(self.G_optim, state['G_optim'], self._stable_param_names('genA2B', 'genB2A'))
            _load_optimizer_state(self.D_optim, state['D_optim'],
                                  self._stable_param_names('disGA', 'disGB', 'disLA', 'disLB'))
        return int(state.get('step', 0))

    def newest_checkpoint(self) -> str | None:
        """The checkpoint with the highest step: the newest periodic one or ``latest``."""
        candidates = list_checkpoints(self.model_dir, self.dataset)
        latest = os.path.join(self.model_dir, checkpoint_name(self.dataset, None))
        best = candidates[-1] if candidates else None
        if os.path.exists(latest):
            if best is None or _step_in(latest) >= _step_in(best):
                best = latest
        return best

    def resume_latest(self) -> None:
        path = self.newest_checkpoint()
        if path is None:
            log.info('--resume: no checkpoint in %s, starting from step 1', self.model_dir)
            return
        self.start_step = self.load(path)
        log.info('resumed from %s at step %d', path, self.start_step)


def _step_in(path: str) -> int:
    return int(paddle.load(path).get('step', 0))
