"""Deployment: translate your own photos (optionally cropped to the face), export the generators for
Paddle Inference and ONNX, and run them on Paddle Inference (predict.py, the test phase on the CPU).

    python main.py --phase infer  --dataset selfie2anime --input photos/ [--face_crop True] [--keep_size True]
    python main.py --phase export --dataset selfie2anime
    python predict.py --model results/selfie2anime/export/genA2B --input photos/ --output anime/

An exported generator takes ``image`` [batch (dynamic), img_ch, img_size, img_size] in [-1, 1] and
returns the translated image of the same shape. Paddle 3 writes ``<name>.json`` (PIR) and
``<name>.pdiparams``, Paddle 2.6 ``<name>.pdmodel`` and ``<name>.pdiparams``; with paddle2onnx also
``<name>.onnx`` (opset 11).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import paddle
import paddle.nn as nn

from dataset import (IMG_EXTENSIONS, DatasetError, UnreadableImage, batches, find_images, load_image, output_stem,
                     resize, to_tensor_range, to_uint8_image, write_image)
from extras.monitor import progress_bar
from utils import translation_strips

log = logging.getLogger('ugatit')


# --------------------------------------------------------------------------- #
# Your own photos: face crop, pre- and post-processing
# --------------------------------------------------------------------------- #
class NoFaceFound(ValueError):
    """--face_crop on a photo where OpenCV's face detector finds no face."""


def face_box(img: np.ndarray, margin: float = 1.8) -> tuple[int, int, int]:
    """(top, left, side) of the square around the largest frontal face, ``margin`` × the face box,
    raised a little for the hair (the selfie2anime photos are such crops), kept inside the image.

    OpenCV's bundled Haar cascade: no download. Raises ``NoFaceFound``.
    """
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, 'haarcascade_frontalface_default.xml'))
    grey = img[:, :, 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    scale = min(1.0, 640 / max(grey.shape))                   # detect on at most 640 px: fast on huge photos
    faces = cascade.detectMultiScale(cv2.resize(grey, None, fx=scale, fy=scale) if scale < 1 else grey,
                                     scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
        raise NoFaceFound('no face found')
    x, y, w, h = (v / scale for v in max(faces, key=lambda f: f[2] * f[3]))
    height, width = img.shape[:2]
    side = int(min(margin * max(w, h), height, width))
    left = int(np.clip(x + w / 2 - side / 2, 0, width - side))
    top = int(np.clip(y + h / 2 - 0.1 * h - side / 2, 0, height - side))
    return top, left, side


def crop_face(img: np.ndarray) -> np.ndarray:
    """The square around the largest face (``face_box``)."""
    top, left, side = face_box(img)
    return img[top:top + side, left:left + side]


def center_crop(img: np.ndarray) -> np.ndarray:
    """The largest centred square of an image."""
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return img[top:top + side, left:left + side]


@dataclass
class Framing:
    """How a photo becomes the model's square input, and how the output goes back.

    face_crop: the square around the face; else keep_size: the whole photo squashed to a square and
    the translation resized back to the photo's size (its aspect ratio); else the centred square.
    """
    img_size: int
    keep_size: bool = False
    face_crop: bool = False

    def input(self, img: np.ndarray) -> np.ndarray:
        """uint8 H×W×C → float32 C×S×S in [-1, 1] (``NoFaceFound`` with face_crop and no face)."""
        if self.face_crop:
            img = crop_face(img)
        elif not self.keep_size:
            img = center_crop(img)
        return to_tensor_range(resize(img, self.img_size))

    def output(self, out: np.ndarray, original_shape: tuple) -> np.ndarray:
        """The generator's C×S×S output → uint8 H×W×C, at the photo's size with keep_size."""
        image = to_uint8_image(out)
        if self.keep_size and not self.face_crop:
            image = resize(image, *original_shape[:2])
        return image


def inference_inputs(path: str) -> list[str]:
    """The image files to translate: ``path`` itself, or every image under the folder ``path``."""
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = find_images(path)
        if not files:
            raise DatasetError(f'{path} holds no image ({", ".join(IMG_EXTENSIONS)})')
        return files
    raise DatasetError(f'--input {path} does not exist: give an image file or a folder of images')


def translate_files(input_path: str, translate: Callable[[np.ndarray], np.ndarray], framing: Framing,
                    channels: int, out_dir: str, on_image: Callable[[], None] | None = None) -> int:
    """Translate the image ``input_path`` or every image under it into ``out_dir/<stem>.png``.

    ``translate``: [1, C, S, S] float32 in [-1, 1] → the generator output, same shape (numpy). Files
    that cannot be read, or hold no face with face_crop, are skipped with a warning naming each;
    returns the number written (none is a ``DatasetError``).
    """
    files = inference_inputs(input_path)
    root = input_path if os.path.isdir(input_path) else os.path.dirname(input_path)
    os.makedirs(out_dir, exist_ok=True)
    skipped = []
    for path in files:
        try:
            img = load_image(path, channels)
            result = translate(framing.input(img)[None])[0]
        except (UnreadableImage, NoFaceFound) as e:
            log.warning('skipping %s: %s', path, e)
            skipped.append(path)
            continue
        write_image(os.path.join(out_dir, output_stem(path, root) + '.png'), framing.output(result, img.shape))
        if on_image is not None:
            on_image()
    if len(skipped) == len(files):
        raise DatasetError(f'none of the {len(files)} input files could be translated (unreadable'
                           + (', or no face found: try --face_crop False' if framing.face_crop else '')
                           + f'): {", ".join(skipped[:3])}')
    if skipped:
        log.warning('%d files skipped', len(skipped))
    return len(files) - len(skipped)


def eager_translator(generator: nn.Layer) -> Callable[[np.ndarray], np.ndarray]:
    """A generator as numpy batch → numpy translation, in eval mode without autograd."""
    generator.eval()

    def translate(batch: np.ndarray) -> np.ndarray:
        with paddle.no_grad():
            return generator(paddle.to_tensor(batch))[0].numpy()
    return translate


# --------------------------------------------------------------------------- #
# Programs: the test strips and the exported generators
# --------------------------------------------------------------------------- #
class Translator(nn.Layer):
    """A generator reduced to its image output: x ∈ [-1, 1] → G(x) ∈ [-1, 1]."""

    def __init__(self, generator: nn.Layer):
        super().__init__()
        self.generator = generator

    def forward(self, image: paddle.Tensor) -> paddle.Tensor:
        return self.generator(image)[0]


class StripModel(nn.Layer):
    """Both generators of one direction, as the official test: real → (translation, its heatmap,
    cycle, its heatmap, identity, its heatmap)."""

    def __init__(self, forward_generator: nn.Layer, backward_generator: nn.Layer):
        super().__init__()
        self.forward_generator = forward_generator
        self.backward_generator = backward_generator

    def forward(self, real: paddle.Tensor):
        fake, _, fake_heatmap = self.forward_generator(real)
        cycle, _, cycle_heatmap = self.backward_generator(fake)
        identity, _, identity_heatmap = self.backward_generator(real)
        return fake, fake_heatmap, cycle, cycle_heatmap, identity, identity_heatmap

    def run_eager(self, real: np.ndarray) -> list:
        """The six outputs for a numpy batch, as numpy (None for a generator without CAM)."""
        with paddle.no_grad():
            return [None if t is None else t.numpy() for t in self(paddle.to_tensor(real))]


def input_spec(img_ch: int, img_size: int) -> list:
    return [paddle.static.InputSpec([None, img_ch, img_size, img_size], 'float32', name='image')]


def model_files(prefix: str) -> tuple[str, str]:
    """(model file, params file) of an exported prefix, for Paddle 3 (.json) or 2.6 (.pdmodel)."""
    params = prefix + '.pdiparams'
    for model in (prefix + '.json', prefix + '.pdmodel'):
        if os.path.isfile(model) and os.path.isfile(params):
            return model, params
    raise FileNotFoundError(f'no exported generator at {prefix} (looked for .json or .pdmodel, and .pdiparams): '
                            f'run python main.py --phase export first')


def export_info(prefix: str) -> dict:
    """What ``export_generators`` recorded beside an exported generator (its image size and channels)."""
    model_files(prefix)
    path = os.path.join(os.path.dirname(prefix), 'export_info.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no exported generator at {prefix} ({path} is missing): run python main.py '
                                f'--phase export first')
    with open(path) as f:
        return json.load(f)


def cpu_threads() -> int:
    """``OMP_NUM_THREADS`` when set, else every core this process may use (torch's default too)."""
    value = os.environ.get('OMP_NUM_THREADS', '')
    return int(value) if value.isdigit() and int(value) > 0 else len(os.sched_getaffinity(0))


def create_predictor(prefix: str, threads: int | None = None, use_gpu: bool = False, bf16: bool = False):
    """A paddle.inference predictor for an exported model: oneDNN kernels on the CPU with ``threads``
    (default ``cpu_threads()``), and with ``bf16`` convolutions in bfloat16 (AVX-512/AMX CPUs; close
    to the float32 numbers, not equal)."""
    from paddle import inference
    config = inference.Config(*model_files(prefix))
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


def strip_engine(model: StripModel, img_ch: int, img_size: int, bf16: bool = False) -> Callable:
    """``model`` as a Paddle Inference program on oneDNN kernels: numpy batch → its six outputs.

    On the CPU this is several times faster than eager Paddle (docs/performance.md) with the same
    numbers to float rounding; ``bf16``: in bfloat16, within bfloat16 rounding.
    """
    model.eval()
    with tempfile.TemporaryDirectory(prefix='ugatit-engine-') as folder:
        prefix = os.path.join(folder, 'strip')
        paddle.jit.save(model, prefix, input_spec=input_spec(img_ch, img_size))
        predictor = create_predictor(prefix, bf16=bf16)          # reads the files now: the folder can go
    return lambda real: run_predictor(predictor, real)


def translate_folder(model: StripModel, data, direction: str, out_dir: str, strip_dir: str | None = None,
                     bf16: bool = False, small_model: bool = False, num_workers: int = 0) -> int:
    """The test phase: every image of ``data`` (a dataset.ImageFolder) translated into
    ``out_dir/<stem>.png`` and, with ``strip_dir``, the official strips ``<direction>_%d.png``.

    On the CPU ``model`` runs as a Paddle Inference program on oneDNN kernels (``strip_engine``), elsewhere
    eagerly; small models (``ch·img_size ≤ 2048``) 8 images per call, where batching pays
    (docs/performance.md). Returns the number of images.
    """
    img_size = data.img_size
    run = strip_engine(model, data.channels, img_size, bf16=bf16) if paddle.get_device() == 'cpu' else model.run_eager
    bar, n = progress_bar(len(data), desc=direction, unit='img'), 0
    with batches(data, batch_size=8 if small_model else 1, num_workers=num_workers) as loader:
        for real, index in loader:
            real = real.numpy()
            for i, strip in enumerate(translation_strips(real, run(real), img_size)):
                n += 1
                if strip_dir is not None:
                    write_image(os.path.join(strip_dir, f'{direction}_{n}.png'), strip)
                write_image(os.path.join(out_dir, data.stem(int(index[i])) + '.png'), strip[4 * img_size:5 * img_size])
            if bar is not None:
                bar.update(real.shape[0])
    if bar is not None:
        bar.close()
    return n


def export_generators(generators: dict, img_ch: int, img_size: int, output_dir: str, info: dict) -> list[str]:
    """Export each generator ({name: layer}) with ``paddle.jit.save`` (and to ONNX when paddle2onnx is
    installed) into ``output_dir``, with ``export_info.json`` (shapes, plus ``info``); returns the files."""
    os.makedirs(output_dir, exist_ok=True)
    spec = input_spec(img_ch, img_size)
    onnx = importlib.util.find_spec('paddle2onnx') is not None
    written = []
    for name, generator in generators.items():
        translator = Translator(generator)
        translator.eval()
        prefix = os.path.join(output_dir, name)
        paddle.jit.save(translator, prefix, input_spec=spec)
        written.append(prefix)
        if onnx:
            paddle.onnx.export(translator, prefix, input_spec=spec, opset_version=11)
            written.append(prefix + '.onnx')
    if not onnx:
        log.info('ONNX skipped: pip install paddle2onnx to also write %s', ', '.join(f'{n}.onnx' for n in generators))
    with open(os.path.join(output_dir, 'export_info.json'), 'w') as f:
        json.dump({**info, 'img_size': img_size, 'img_ch': img_ch, 'generators': list(generators),
                   'input': 'image [batch (dynamic), img_ch, img_size, img_size], float32 in [-1, 1]',
                   'output': 'translated image, same shape, in [-1, 1]', 'paddle': paddle.__version__}, f, indent=1)
    return written
