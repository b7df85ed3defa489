"""Translate images with an exported generator on Paddle Inference (no training code, no checkpoint).

    python main.py --phase export --dataset selfie2anime
    python predict.py --model results/selfie2anime/export/genA2B --input photos/ --output anime/ [--face_crop True]

Images of any size are framed as ``main.py --phase infer`` frames them (extras/deploy.py: the centred
square, the face with --face_crop True, or the whole image and back to its size with --keep_size True).
"""
from __future__ import annotations

import argparse
import warnings

warnings.filterwarnings('ignore', message='No ccache found')   # Paddle's import-time note for C++ extension builders

from dataset import DatasetError
from extras.deploy import Framing, create_predictor, export_info, run_predictor, translate_files
from utils import str2bool


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description='Translate images with an exported U-GAT-IT generator')
    p.add_argument('--model', required=True, help='exported prefix, e.g. results/selfie2anime/export/genA2B')
    p.add_argument('--input', required=True, help='an image or a folder of images')
    p.add_argument('--output', default='predictions', help='output folder')
    p.add_argument('--keep_size', type=str2bool, default=False, help='resize the result back to the input size')
    p.add_argument('--face_crop', type=str2bool, default=False, help='translate the square around the largest face')
    p.add_argument('--threads', type=int, default=None, help='CPU threads (default: OMP_NUM_THREADS, else every core)')
    p.add_argument('--use_gpu', type=str2bool, default=False, help='run on GPU 0')
    args = p.parse_args(argv)
    try:
        info = export_info(args.model)
        predictor = create_predictor(args.model, args.threads, args.use_gpu)
        written = translate_files(args.input, lambda batch: run_predictor(predictor, batch)[0],
                                  Framing(info['img_size'], args.keep_size, args.face_crop), info['img_ch'], args.output)
    except (OSError, DatasetError) as e:
        raise SystemExit(f'error: {e}') from None
    print(f'{written} images → {args.output}')
    return args.output


if __name__ == '__main__':
    main()
