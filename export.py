"""Export the trained generators for deployment: Paddle Inference, and ONNX when paddle2onnx is installed.

    python main.py --phase export --dataset selfie2anime [--output DIR]
    python predict.py --model results/selfie2anime/export/genA2B --input photo.jpg

Each generator (genA2B, genB2A) of the newest checkpoint is traced with ``paddle.jit.save`` for
an input ``image`` of shape [batch, img_ch, img_size, img_size] in [-1, 1]: the batch is
dynamic, the image size fixed (the full model's γ/β MLP is tied to it). Its single output is the
translated image [batch, img_ch, img_size, img_size] in [-1, 1]. Paddle 3 writes ``<name>.json``
(PIR) and ``<name>.pdiparams``, Paddle 2.6 ``<name>.pdmodel`` and ``<name>.pdiparams``; with
``pip install paddle2onnx`` also ``<name>.onnx`` (opset 11). ``export_info.json`` records the
shapes and the checkpoint.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os

import paddle
import paddle.nn as nn

log = logging.getLogger('ugatit')

GENERATORS = ('genA2B', 'genB2A')


class Translator(nn.Layer):
    """A generator reduced to its image output: x ∈ [-1, 1] → G(x) ∈ [-1, 1]."""

    def __init__(self, generator: nn.Layer):
        super().__init__()
        self.generator = generator

    def forward(self, image: paddle.Tensor) -> paddle.Tensor:
        return self.generator(image)[0]


class StripModel(nn.Layer):
    """Both generators as one program for the test strips of one direction:
    real → (translation, its heatmap, cycle, its heatmap, identity, its heatmap)."""

    def __init__(self, forward_generator: nn.Layer, backward_generator: nn.Layer):
        super().__init__()
        self.forward_generator = forward_generator
        self.backward_generator = backward_generator

    def forward(self, real: paddle.Tensor):
        fake, _, fake_heatmap = self.forward_generator(real)
        cycle, _, cycle_heatmap = self.backward_generator(fake)
        identity, _, identity_heatmap = self.backward_generator(real)
        return fake, fake_heatmap, cycle, cycle_heatmap, identity, identity_heatmap


def strip_engine(forward_generator: nn.Layer, backward_generator: nn.Layer, img_ch: int, img_size: int,
                 folder: str, bf16: bool = False):
    """The test strips of one direction on Paddle Inference with oneDNN: a function
    real [B, C, S, S] (numpy, [-1, 1]) → the six arrays of ``StripModel``.

    On the CPU this runs a generator forward 2–2.5× faster than eager Paddle (oneDNN
    convolutions, a static program), with the same results to float rounding; ``bf16``: in
    bfloat16, another ~2× on CPUs with AMX, results within bfloat16 rounding.
    """
    from predict import create_predictor, run_predictor
    model = StripModel(forward_generator, backward_generator)
    model.eval()
    prefix = os.path.join(folder, 'strip')
    paddle.jit.save(model, prefix, input_spec=input_spec(img_ch, img_size))
    predictor = create_predictor(prefix, bf16=bf16)

    return lambda real: run_predictor(predictor, real)


def input_spec(img_ch: int, img_size: int) -> list:
    return [paddle.static.InputSpec([None, img_ch, img_size, img_size], 'float32', name='image')]


def model_files(prefix: str) -> tuple[str, str]:
    """(model file, params file) of an exported prefix, for Paddle 3 (.json) or 2.6 (.pdmodel)."""
    for extension in ('.json', '.pdmodel'):
        if os.path.exists(prefix + extension):
            return prefix + extension, prefix + '.pdiparams'
    raise FileNotFoundError(f'no exported model at {prefix} (.json or .pdmodel): '
                            f'run python main.py --phase export first')


def export_generators(gan, output_dir: str | None = None) -> list[str]:
    """Export genA2B and genB2A of ``gan``'s newest checkpoint; returns the written prefixes
    (and .onnx files, when paddle2onnx is installed)."""
    from UGATIT import _unwrap
    step = gan.load_newest(weights_only=True)
    output_dir = output_dir or os.path.join(gan.out_dir, 'export')
    os.makedirs(output_dir, exist_ok=True)
    spec = input_spec(gan.img_ch, gan.img_size)
    onnx = importlib.util.find_spec('paddle2onnx') is not None
    written = []
    for name in GENERATORS:
        translator = Translator(_unwrap(getattr(gan, name)))
        translator.eval()
        prefix = os.path.join(output_dir, name)
        paddle.jit.save(translator, prefix, input_spec=spec)
        written.append(prefix)
        if onnx:
            paddle.onnx.export(translator, prefix, input_spec=spec, opset_version=11)
            written.append(prefix + '.onnx')
    if not onnx:
        log.info('ONNX skipped: pip install paddle2onnx to also write genA2B.onnx and genB2A.onnx')
    info = {'checkpoint': gan.loaded_checkpoint, 'step': step, 'img_size': gan.img_size, 'img_ch': gan.img_ch,
            'input': 'image [batch (dynamic), img_ch, img_size, img_size], float32 in [-1, 1]',
            'output': 'translated image, same shape, in [-1, 1]', 'generators': list(GENERATORS),
            'paddle': paddle.__version__}
    with open(os.path.join(output_dir, 'export_info.json'), 'w') as f:
        json.dump(info, f, indent=1)
    log.info('exported %s (step %d) to %s', ', '.join(GENERATORS), step, output_dir)
    return written
