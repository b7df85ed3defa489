"""Offline two-domain demo dataset for U-GAT-IT: photos (A) <-> cartoons (B).

The photos are the colour images that scikit-image ships inside its wheel,
read straight from the ``skimage.data`` folder with OpenCV, so building needs
no network (the ``skimage.data.<name>()`` helpers may try to download some
images with pooch; this module never calls them).

Domain A holds random square crops of those photos. Domain B holds
:func:`cartoonize` applied to crops: a deterministic OpenCV filter, so every
test image has a known ground-truth translation.

Layout written by :func:`build_demo_dataset`::

    <root>/<name>/trainA/*.png   crops, one random set
    <root>/<name>/trainB/*.png   cartoonize() of an independent random set (unpaired)
    <root>/<name>/testA/<stem>.png   crops
    <root>/<name>/testB/<stem>.png   cartoonize() of testA/<stem>.png (paired by stem)
    <root>/<name>/README.md, build_info.json

Command line: ``python -m extras.demo_data [--root dataset] [--size 128] [--force]``
prints the dataset folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dataset import DatasetError, find_images, load_image, output_stem, resize, write_image

log = logging.getLogger('ugatit')

# Colour photos bundled in the scikit-image wheel. Left out on purpose:
# hubble_deep_field.jpg (crops are nearly all black), color.png/phantom.png/
# horse.png/logo.png (synthetic graphics, already "cartoons"),
# motorcycle_right.png (a stereo twin of motorcycle_left.png) and the
# grayscale images (they would add a colourless sub-domain).
SOURCE_IMAGES: tuple[str, ...] = (
    'astronaut.png',
    'chelsea.png',
    'coffee.png',
    'ihc.png',
    'motorcycle_left.png',
    'retina.jpg',
    'rocket.jpg',
)

DOMAINS: tuple[str, ...] = ('trainA', 'trainB', 'testA', 'testB')
BUILD_INFO_FILE = 'build_info.json'
# Bump when crops or the filter change, so old builds are not reused.
FORMAT_VERSION = 1

# Crop side as a fraction of the source's shorter side: small enough to give
# varied content, large enough that crops show recognisable structure.
CROP_FRACTION_RANGE = (0.35, 0.9)

# cartoonize() parameters, tuned on 128 px crops.
BILATERAL_PASSES = 2
BILATERAL_DIAMETER = 7
BILATERAL_SIGMA_COLOR = 40.0
BILATERAL_SIGMA_SPACE = 5.0
LIGHTNESS_STEP = 32  # 8-bit OpenCV L channel (0..255) -> 8 lightness bands
CHROMA_STEP = 12  # 8-bit OpenCV a/b channels, grid centred on neutral 128
EDGE_MEDIAN_KSIZE = 7
EDGE_BLOCK_SIZE = 9
EDGE_OFFSET = 5

# Random streams, so that the three crop sets are independent of each other.
_STREAM_TRAIN_A, _STREAM_TRAIN_B, _STREAM_TEST = 0, 1, 2


# --------------------------------------------------------------------------
# The cartoon filter
# --------------------------------------------------------------------------

def _smooth_preserving_edges(img_rgb: np.ndarray) -> np.ndarray:
    """Repeated bilateral filtering: flattens texture, keeps strong edges.

    Each pass averages a pixel with neighbours that are both close in space
    (Gaussian, sigma_space) and close in colour (Gaussian, sigma_color), so
    smooth regions become flat while boundaries with large colour jumps stay.
    """
    smoothed = img_rgb
    for _ in range(BILATERAL_PASSES):
        smoothed = cv2.bilateralFilter(
            smoothed, BILATERAL_DIAMETER, BILATERAL_SIGMA_COLOR, BILATERAL_SIGMA_SPACE)
    return smoothed


def _quantize_lab(img_rgb: np.ndarray) -> np.ndarray:
    """Posterise in Lab space: few lightness bands, a coarse chroma grid.

    L -> floor(L / s_L) * s_L + s_L / 2 (band centre), with s_L = LIGHTNESS_STEP;
    a, b -> 128 + round((c - 128) / s_c) * s_c, with s_c = CHROMA_STEP, so
    neutral greys stay exactly neutral. Quantising lightness and chroma
    separately avoids the hue shifts of per-channel RGB posterisation (e.g. a
    blue sky gradient turning into green and purple bands).
    """
    lab = cv2.cvtColor(img_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    lightness = np.floor(lab[..., 0] / LIGHTNESS_STEP) * LIGHTNESS_STEP + LIGHTNESS_STEP / 2
    chroma = np.round((lab[..., 1:] - 128.0) / CHROMA_STEP) * CHROMA_STEP + 128.0
    quantized = np.clip(np.dstack([lightness, chroma]), 0, 255).astype(np.uint8)
    return cv2.cvtColor(quantized, cv2.COLOR_LAB2RGB)


def _dark_edge_mask(img_rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of outline pixels: darker than their local mean.

    A median blur first removes fine texture; then a pixel is an outline when
    grey < mean(grey over a EDGE_BLOCK_SIZE^2 window) - EDGE_OFFSET, which
    marks the dark side of every sizeable lightness step.
    """
    grey = cv2.cvtColor(img_rgb, cv2.COLOR_RGB2GRAY)
    grey = cv2.medianBlur(grey, EDGE_MEDIAN_KSIZE)
    binary = cv2.adaptiveThreshold(
        grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY,
        EDGE_BLOCK_SIZE, EDGE_OFFSET)
    return binary == 0


def cartoonize(img: np.ndarray) -> np.ndarray:
    """Turn an RGB uint8 photo into a flat-coloured cartoon with black outlines.

    Pure and deterministic (no randomness, no global state); returns a new
    array with the same shape and dtype. Three steps:

    1. edge-preserving smoothing: BILATERAL_PASSES bilateral filters
       (diameter 7, sigma_color 40, sigma_space 5) flatten texture;
    2. colour quantisation in Lab: 8 lightness bands and a chroma grid of
       step 12 give flat colour regions without hue shifts;
    3. outlines: pixels darker than their 9x9 local mean by more than 5 grey
       levels (after a 7x7 median blur of the smoothed grey image) become black.

    Every step is local (a pixel depends only on a small neighbourhood), which
    keeps the mapping learnable by a convolutional translation model.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(
            f'cartoonize expects an RGB uint8 image of shape (H, W, 3), '
            f'got dtype {img.dtype} and shape {img.shape}')
    smoothed = _smooth_preserving_edges(np.ascontiguousarray(img))
    cartoon = _quantize_lab(smoothed)
    cartoon[_dark_edge_mask(smoothed)] = 0
    return cartoon


# --------------------------------------------------------------------------
# Source photos and random crops
# --------------------------------------------------------------------------

def skimage_data_dir() -> Path:
    """Folder of the images bundled in the installed scikit-image wheel."""
    import skimage.data  # local import: only the folder location is needed
    return Path(skimage.data.__file__).resolve().parent


def load_source_photos() -> dict[str, np.ndarray]:
    """Load SOURCE_IMAGES from the scikit-image data folder, keyed by stem."""
    folder = skimage_data_dir()
    photos = {}
    for filename in SOURCE_IMAGES:
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(
                f'{path} is missing: the scikit-image wheel should bundle it')
        photos[Path(filename).stem] = load_image(str(path))
    return photos


@dataclass(frozen=True)
class CropSpec:
    """One square crop: source photo, top-left corner, side, mirror flag."""

    source: str
    top: int
    left: int
    side: int
    flip: bool


def sample_crop_specs(photos: dict[str, np.ndarray], count: int, size: int,
                      rng: np.random.Generator) -> list[CropSpec]:
    """Draw `count` random square crops, spread evenly over the photos.

    Sources cycle through the photos in a shuffled order (counts differ by at
    most one); side = U(CROP_FRACTION_RANGE) * shorter side, but at least
    `size` when the photo allows, to limit upscaling; position uniform; a
    horizontal flip with probability 1/2.
    """
    names = sorted(photos)
    source_order = rng.permutation(np.arange(count) % len(names))
    specs = []
    for source_index in source_order:
        name = names[int(source_index)]
        height, width = photos[name].shape[:2]
        shorter = min(height, width)
        side = int(round(rng.uniform(*CROP_FRACTION_RANGE) * shorter))
        side = min(max(side, size), shorter)
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        flip = bool(rng.random() < 0.5)
        specs.append(CropSpec(name, top, left, side, flip))
    return specs


def render_crop(photos: dict[str, np.ndarray], spec: CropSpec, size: int) -> np.ndarray:
    """Cut the crop out of its photo and resize it to size x size RGB uint8."""
    patch = photos[spec.source][spec.top:spec.top + spec.side,
                                spec.left:spec.left + spec.side]
    if spec.flip:
        patch = patch[:, ::-1]
    interpolation = cv2.INTER_AREA if spec.side >= size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interpolation)


def _crop_rng(seed: int, stream: int) -> np.random.Generator:
    """Independent, reproducible random stream per crop set."""
    return np.random.default_rng([seed, stream])


# --------------------------------------------------------------------------
# Dataset building
# --------------------------------------------------------------------------

def _build_info(size: int, n_train: int, n_test: int, seed: int) -> dict:
    """Everything that determines the files; a stored copy must match it."""
    return {
        'format_version': FORMAT_VERSION,
        'size': size,
        'n_train': n_train,
        'n_test': n_test,
        'seed': seed,
        'sources': list(SOURCE_IMAGES),
    }


def _expected_counts(n_train: int, n_test: int) -> dict[str, int]:
    return {'trainA': n_train, 'trainB': n_train, 'testA': n_test, 'testB': n_test}


def _count_pngs(folder: Path) -> int:
    return sum(1 for p in folder.glob('*.png') if p.is_file())


def is_complete(folder: str | os.PathLike, size: int, n_train: int, n_test: int,
                seed: int) -> bool:
    """True if `folder` is a finished build for exactly these arguments.

    Finished means: build_info.json equals the arguments and each of the four
    domain folders holds the expected number of PNG files.
    """
    folder = Path(folder)
    try:
        stored = json.loads((folder / BUILD_INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    if stored != _build_info(size, n_train, n_test, seed):
        return False
    return all((folder / domain).is_dir() and _count_pngs(folder / domain) == count
               for domain, count in _expected_counts(n_train, n_test).items())


def _write_domain_images(photos: dict[str, np.ndarray], specs: list[CropSpec],
                         size: int, prefix: str, folder_a: Path | None,
                         folder_b: Path | None) -> None:
    """Render each crop; save it to folder_a and its cartoon to folder_b.

    Either folder may be None to skip that output. File stem:
    <prefix><index:04d>_<source>, identical in both folders.
    """
    for index, spec in enumerate(specs):
        stem = f'{prefix}{index:04d}_{spec.source}'
        crop = render_crop(photos, spec, size)
        if folder_a is not None:
            write_image(str(folder_a / f'{stem}.png'), crop)
        if folder_b is not None:
            write_image(str(folder_b / f'{stem}.png'), cartoonize(crop))


def _readme_text(name: str, size: int, n_train: int, n_test: int, seed: int,
                 identity_error: float) -> str:
    sources = ', '.join(SOURCE_IMAGES)
    return f"""# `{name}`: offline U-GAT-IT demo dataset (photo <-> cartoon)

Generated by `demo_data.py`:
`build_demo_dataset(size={size}, n_train={n_train}, n_test={n_test}, seed={seed})`.
Rebuilding with the same arguments gives byte-identical files; do not edit by hand.

- Domain A: random square crops ({size}x{size} RGB PNG, random position, scale
  and horizontal flip) of the photos bundled with scikit-image:
  {sources}.
- Domain B: `demo_data.cartoonize()` of crops: bilateral smoothing, colour
  quantisation in Lab (8 lightness bands) and black outlines from an adaptive
  threshold of the grey image.

| folder | images | content |
|---|---|---|
| trainA | {n_train} | crops (one random set) |
| trainB | {n_train} | cartoons of an independent random set: **unpaired** |
| testA | {n_test} | crops |
| testB | {n_test} | cartoons of the testA crop with the same file name: **paired** |

Training is unpaired, as with real U-GAT-IT data. The test set has a known
ground truth: A2B of `testA/x.png` should look like `testB/x.png` and B2A of
`testB/x.png` like `testA/x.png`. Measure it with
`demo_data.translation_error(pred_dir, gt_dir)` (mean absolute error, pixels
in [0, 1]); the identity baseline `translation_error(testA, testB)` is
{identity_error:.4f}. Test crops are different random crops of the same
photos as the training crops, so they test the learned filter, not
generalisation to new scenes.
"""


def _write_dataset(folder: Path, name: str, size: int, n_train: int, n_test: int,
                   seed: int) -> None:
    """Write all images, README.md and build_info.json into `folder`."""
    photos = load_source_photos()
    domain_dirs = {domain: folder / domain for domain in DOMAINS}
    for path in domain_dirs.values():
        path.mkdir(parents=True)
    train_a_specs = sample_crop_specs(photos, n_train, size, _crop_rng(seed, _STREAM_TRAIN_A))
    train_b_specs = sample_crop_specs(photos, n_train, size, _crop_rng(seed, _STREAM_TRAIN_B))
    test_specs = sample_crop_specs(photos, n_test, size, _crop_rng(seed, _STREAM_TEST))
    _write_domain_images(photos, train_a_specs, size, 'a', domain_dirs['trainA'], None)
    _write_domain_images(photos, train_b_specs, size, 'b', None, domain_dirs['trainB'])
    _write_domain_images(photos, test_specs, size, 't',
                         domain_dirs['testA'], domain_dirs['testB'])
    identity_error = translation_error(str(domain_dirs['testA']), str(domain_dirs['testB']))
    (folder / 'README.md').write_text(
        _readme_text(name, size, n_train, n_test, seed, identity_error))
    (folder / BUILD_INFO_FILE).write_text(
        json.dumps(_build_info(size, n_train, n_test, seed), indent=2) + '\n')


def _swap_into_place(staging: Path, target: Path) -> None:
    """Move a finished staging folder to `target`, replacing any old folder.

    The old folder is first renamed aside, so `target` is at every moment
    either absent, the old folder or the complete new one.
    """
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f'.{target.name}-old-', dir=target.parent))
        old_folder = trash / target.name
        os.replace(target, old_folder)
        try:
            os.replace(staging, target)
        except OSError:
            os.replace(old_folder, target)  # put the old folder back
            shutil.rmtree(trash)
            raise
        shutil.rmtree(trash)
    else:
        os.replace(staging, target)


def build_demo_dataset(root: str = 'dataset', name: str = 'demo', size: int = 128,
                       n_train: int = 64, n_test: int = 16, seed: int = 0,
                       force: bool = False) -> str:
    """Build the photo/cartoon demo dataset in <root>/<name> and return that path.

    If the folder already holds a complete build for the same arguments (see
    is_complete), nothing is written unless `force`. Otherwise everything is
    written into a hidden staging folder next to it, which is renamed to
    <root>/<name> only once finished, so an interrupted build never looks
    complete. Same arguments -> byte-identical files.
    """
    if size < 8:
        raise ValueError(f'size must be at least 8 pixels, got {size}')
    if n_train < 1 or n_test < 1:
        raise ValueError(f'n_train and n_test must be positive, got {n_train}, {n_test}')
    target = Path(root) / name
    if not force and is_complete(target, size, n_train, n_test, seed):
        return str(target)
    if target.is_dir() and any(target.iterdir()) and not (target / BUILD_INFO_FILE).is_file():
        raise DatasetError(f'{target} holds data the demo did not build (it has no {BUILD_INFO_FILE}) and the demo '
                           f'would replace it: give the demo another --dataset or --data_root')
    target.parent.mkdir(parents=True, exist_ok=True)
    # Hidden sibling on the same file system, so the final rename is atomic;
    # plain mkdir (not mkdtemp) so the folder gets the usual umask permissions.
    staging = target.parent / f'.{name}-building-{uuid.uuid4().hex[:12]}'
    staging.mkdir()
    try:
        _write_dataset(staging, name, size, n_train, n_test, seed)
        _swap_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return str(target)


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

def _images_by_stem(folder: str) -> dict[str, str]:
    """{output stem: path} of the images under ``folder`` (``dataset.output_stem``: nested files as
    'sub__name', the names test and infer give their translations)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder}')
    return {output_stem(path, folder): path for path in find_images(folder)}


def translation_error(pred_dir: str, gt_dir: str) -> float:
    """Mean absolute error, in [0, 1] pixel units, between images of the same stem.

    For each stem present in both folders, the prediction is resized to the ground-truth size if
    needed and err = mean(|pred − gt|) / 255 over all pixels and channels; the result is the mean of
    err over stems (each image weighs the same). Raises ValueError naming both folders if they share
    no stem.
    """
    predictions, ground_truths = _images_by_stem(pred_dir), _images_by_stem(gt_dir)
    common = sorted(predictions.keys() & ground_truths.keys())
    if not common:
        raise ValueError(f'no image file stems in common between {pred_dir!r} ({len(predictions)} images) '
                         f'and {gt_dir!r} ({len(ground_truths)} images)')
    errors = []
    for stem in common:
        gt = load_image(ground_truths[stem]).astype(np.float64)
        pred = resize(load_image(predictions[stem]), *gt.shape[:2]).astype(np.float64)
        errors.append(np.mean(np.abs(pred - gt)) / 255.0)
    return float(np.mean(errors))


def demo_errors(test_dir: str, data: str, untrained_dir: str | None = None) -> dict:
    """How close the demo's translations are to the ground truth (testB/x is the exact A→B translation
    of testA/x): mean |pixel| error in [0, 1] of the trained model, of an untrained one (its
    translations in ``untrained_dir``) and of the identity."""
    return {'trained': translation_error(os.path.join(test_dir, 'A2B'), os.path.join(data, 'testB')),
            'B2A': translation_error(os.path.join(test_dir, 'B2A'), os.path.join(data, 'testA')),
            'untrained': None if untrained_dir is None else translation_error(untrained_dir, os.path.join(data, 'testB')),
            'identity_baseline': translation_error(os.path.join(data, 'testA'), os.path.join(data, 'testB'))}


def run_demo(gan, args) -> dict | None:
    """``python main.py --demo``: build the dataset if needed, translate testA with the untrained model,
    train, test, and log (and save as demo_error.json) how close the translations come to the ground
    truth. Returns the errors (rank 0, unless a signal stopped training)."""
    from dataset import ImageFolder
    from extras.distributed import barrier, rank
    from utils import check_folder
    if rank() == 0:
        log.info('demo dataset: %s', build_demo_dataset(root=args.data_root, name=args.dataset))
    barrier()                                    # the other ranks wait for rank 0's build
    data = os.path.join(args.data_root, args.dataset)
    untrained = None
    if rank() == 0 and not args.resume:
        untrained = check_folder(os.path.join(gan.out_dir, 'untrained', 'A2B'))
        gan.translate_folder(ImageFolder(os.path.join(data, 'testA'), args.img_size, channels=args.img_ch), 'A2B',
                             untrained)
    gan.train()
    if rank() != 0 or gan.stop_reason is not None:
        return None
    errors = {**demo_errors(gan.test(), data, untrained), 'iteration': args.iteration}
    with open(os.path.join(gan.out_dir, 'demo_error.json'), 'w') as f:
        json.dump(errors, f, indent=1)
    log.info('demo A2B error vs ground truth (mean |pixel| in [0,1]): untrained %s, trained %.4f, identity baseline '
             '%.4f', 'n/a' if untrained is None else f'{errors["untrained"]:.4f}', errors['trained'],
             errors['identity_baseline'])
    log.info('results: sample grids in %s, test strips and translations in %s', gan.img_dir, gan.test_dir)
    return errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description='Build the offline photo<->cartoon U-GAT-IT demo dataset '
                    '(<root>/<name>/{trainA,trainB,testA,testB}) and print its path.')
    parser.add_argument('--root', default='dataset', help='parent folder of the dataset')
    parser.add_argument('--name', default='demo', help='dataset folder name')
    parser.add_argument('--size', type=int, default=128, help='side of the square crops, px')
    parser.add_argument('--n_train', type=int, default=64, help='training images per domain')
    parser.add_argument('--n_test', type=int, default=16, help='paired test images')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random crops')
    parser.add_argument('--force', action='store_true', help='rebuild even if complete')
    args = parser.parse_args(argv)
    print(build_demo_dataset(args.root, args.name, args.size, args.n_train, args.n_test,
                             args.seed, args.force))


if __name__ == '__main__':
    main()
