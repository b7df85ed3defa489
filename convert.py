"""Convert official U-GAT-IT weights to this port's checkpoints (no torch, no TensorFlow needed).

    python convert.py --src selfie2anime_params_1000000.pt --dst results/selfie2anime/model
    python convert.py --src <TF checkpoint prefix, or the release folder> --dst results/selfie2anime/model --dataset selfie2anime
    python main.py --phase test --dataset selfie2anime          # the architecture comes from the checkpoint

The format is detected from --src: a torch.save file (.pt/.pth) or .npz of the official PyTorch code,
or a TensorFlow checkpoint of the authors' code (see extras/convert.py). The last line printed begins
with ``main.py flags:``: the flags that run the converted model.
"""
from __future__ import annotations

import argparse
import os
import re
import warnings

warnings.filterwarnings('ignore', message='No ccache found')   # Paddle's import-time note for C++ extension builders

import paddle

from extras.convert import convert_checkpoint
from main import parse_args
from utils import str2bool
from UGATIT import ARCH_ARGS


def main_flags(arch: dict, dataset: str | None) -> str:
    """The main.py flags that run a converted model: the dataset and its architecture flags that differ
    from the defaults (what --phase test and --resume True would also read from the checkpoint)."""
    plain, resolved = parse_args(['--device', 'cpu']), parse_args(['--arch', arch.get('arch', 'pytorch'), '--device', 'cpu'])
    defaults = {k: getattr(plain if k == 'arch' else resolved, k) for k in ARCH_ARGS}    # smoothing follows --arch
    flags = [f'--{k} {arch[k]}' for k in ARCH_ARGS if k in arch and arch[k] != defaults[k]]
    return ' '.join([f'--dataset {dataset or "<dataset>"}'] + flags)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Convert official U-GAT-IT weights (PyTorch or the authors\' TensorFlow) '
                                            'to PaddlePaddle')
    p.add_argument('--src', required=True,
                   help='official PyTorch <dataset>_params_%%07d.pt (or .npz), or a TensorFlow checkpoint prefix / folder')
    p.add_argument('--dst', required=True, help='output .pdparams file, or else a folder (e.g. results/<dataset>/model)')
    p.add_argument('--step', type=int, default=None, help='training step (default: from the --src file name)')
    p.add_argument('--img_size', type=int, default=None,
                   help='image size of a light model (not stored in its weights; default 256); '
                        'a full model\'s size is read from its weights')
    p.add_argument('--dataset', type=str, default=None, help='dataset name for the file name when --dst is a '
                                                             'folder (default: from the --src name)')
    p.add_argument('--generators_only', type=str2bool, default=False,
                   help='convert the two generators only (a quarter of the size): enough to test, infer, export '
                        'and serve, not to fine-tune')
    return p


def main(argv: list[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    paddle.set_device('cpu')
    try:
        dst, arch, notes = convert_checkpoint(args.src, args.dst, args.step, args.img_size, args.dataset,
                                              args.generators_only)
    except (ValueError, OSError) as e:                 # ConversionError, TFCheckpointError: one line
        raise SystemExit(f'error: {e}') from None
    match = re.fullmatch(r'(.+)_params_(\d+)\.pdparams', os.path.basename(dst))
    print(f'wrote {dst}: ' + ', '.join(f'{k} {arch[k]}' for k in ARCH_ARGS if k in arch))
    for key, value in notes.items():
        print(f'  {key}: {value}')
    if not match:
        print('(--phase test and --resume look for <result_dir>/<dataset>/model/<dataset>_params_%07d.pdparams)')
    print('main.py flags: ' + main_flags(arch, args.dataset or (match.group(1) if match else None)))
    return dst


if __name__ == '__main__':
    main()
