"""Translate images with an exported generator on Paddle Inference (no training code, no checkpoint).

    python main.py --phase export --dataset selfie2anime
    python predict.py --model results/selfie2anime/export/genA2B --input photos/ --output anime/

Images of any size: the centred square crop is resized to the model's size (``--keep_size True``:
the whole image, and the result resized back to the input's size), as ``main.py --phase infer``.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from dataset import DatasetError, inference_inputs, translate_files
from export import model_files
from utils import str2bool


def cpu_threads() -> int:
    """``OMP_NUM_THREADS`` when set, else every core this process may use (torch's default too)."""
    value = os.environ.get('OMP_NUM_THREADS', '')
    return int(value) if value.isdigit() and int(value) > 0 else len(os.sched_getaffinity(0))


def create_predictor(prefix: str, threads: int | None = None, use_gpu: bool = False, bf16: bool = False):
    """A paddle.inference predictor for an exported generator: oneDNN kernels on the CPU with
    ``threads`` (default ``cpu_threads()``), and with ``bf16`` convolutions in bfloat16 (AMX/AVX-512
    CPUs; not the float32 numbers, close to them)."""
    from paddle import inference
    model_file, params_file = model_files(prefix)
    config = inference.Config(model_file, params_file)
    if use_gpu:
        config.enable_use_gpu(256, 0)
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(threads or cpu_threads())
        config.enable_mkldnn()
        if bf16:
            config.enable_mkldnn_bfloat16()
    config.disable_glog_info()
    return inference.create_predictor(config)


def run_predictor(predictor, batch: np.ndarray) -> list[np.ndarray]:
    """Every output of a one-input predictor for ``batch`` (float32 numpy)."""
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(batch.shape))
    handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
    predictor.run()
    return [predictor.get_output_handle(name).copy_to_cpu() for name in predictor.get_output_names()]


def translate(predictor, batch: np.ndarray) -> np.ndarray:
    """[B, C, S, S] float32 in [-1, 1] → the generator's output, same shape."""
    return run_predictor(predictor, batch)[0]


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description='Translate images with an exported U-GAT-IT generator')
    p.add_argument('--model', required=True, help='exported prefix, e.g. results/selfie2anime/export/genA2B')
    p.add_argument('--input', required=True, help='an image or a folder of images')
    p.add_argument('--output', default='predictions', help='output folder')
    p.add_argument('--keep_size', type=str2bool, default=False, help='resize the result back to the input size')
    p.add_argument('--threads', type=int, default=None, help='CPU threads (default: OMP_NUM_THREADS, else every core)')
    p.add_argument('--use_gpu', type=str2bool, default=False, help='run on GPU 0')
    args = p.parse_args(argv)
    try:
        info_path = os.path.join(os.path.dirname(args.model), 'export_info.json')
        with open(info_path) as f:
            info = json.load(f)
        predictor = create_predictor(args.model, args.threads, args.use_gpu)
        written = translate_files(args.input, inference_inputs(args.input), lambda batch: translate(predictor, batch), info['img_size'],
                                  info['img_ch'], args.output, args.keep_size)
    except (OSError, DatasetError) as e:
        raise SystemExit(f'error: {e}') from None
    print(f'{written} images → {args.output}')
    return args.output


if __name__ == '__main__':
    main()
