"""Images in, images out: the one image lister, reader and writer, the official transforms, and the
resumable sample stream.

Layout (as the official code): ``<data_root>/<dataset>/{trainA,trainB,testA,testB}``, each searched
recursively, the same way for training, test, eval, the demo and the reports. Images are decoded with
OpenCV into RGB (grey, grey+alpha, RGBA, 16-bit and CMYK files included).

Reproducibility: the k-th training sample of a run (k counted from 0 over the whole run) is fully
determined by (seed, domain, k): which image it is and how it is flipped and cropped. Resuming at
step s and running on R processes therefore see exactly the samples one uninterrupted
single-process run sees (see ``TrainSampler``).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import paddle

from utils import atomic_path

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm')
DOMAINS = ('trainA', 'trainB', 'testA', 'testB')

log = logging.getLogger('ugatit')


class UnreadableImage(ValueError):
    """An image file that cannot be decoded (corrupt, truncated, empty, not an image)."""


class DatasetError(ValueError):
    """A dataset folder that is missing, empty or holds no readable image."""


# --------------------------------------------------------------------------- #
# Listing, reading and writing images
# --------------------------------------------------------------------------- #
def find_images(root: str) -> list[str]:
    """Every image file under ``root`` (recursive, following links), sorted by path.

    Each directory is entered once (by device and inode), so a symlink loop neither hangs
    the walk nor counts its images again.
    """
    found, seen = [], set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        found += [os.path.join(folder, f) for f in files if f.lower().endswith(IMG_EXTENSIONS)]
    return sorted(found)


def output_stem(path: str, root: str) -> str:
    """File name without extension, relative to ``root``; nested folders joined by '__'
    (``root/sub/name.jpg`` → ``sub__name``), so that translations lie flat in one folder."""
    return os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, '__')


def load_image(path: str, channels: int = 3) -> np.ndarray:
    """Decode ``path`` into an H×W×channels uint8 array (RGB, or grey when channels == 1).

    An image is judged by whether it decodes, whatever its extension. 16-bit images are scaled to
    8 bits, an alpha channel is dropped (as PIL's convert('RGB') in the official code), grey images
    are replicated to RGB. Raises ``UnreadableImage`` naming the file when it cannot be decoded.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise UnreadableImage(f'cannot read {path}: {e.strerror}') from None
    if not data:
        raise UnreadableImage(f'{path} is empty (0 bytes)')
    if _truncated_jpeg(data):
        raise UnreadableImage(f'{path} is a truncated JPEG (no end-of-image marker)')
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:              # e.g. a header announcing more pixels than OpenCV's safety limit
        raise UnreadableImage(f'{path} cannot be decoded (too large or malformed for OpenCV)') from None
    if img is None or img.size == 0:
        raise UnreadableImage(f'{path} is not a decodable image (corrupt, truncated or another format)')
    return _to_uint8_channels(img, channels)


def _truncated_jpeg(data: bytes) -> bool:
    """A JPEG stream (magic FF D8) without any end-of-image marker FF D9.

    OpenCV 4's libjpeg decodes a truncated JPEG into a grey-filled image with only a warning, so
    the cut is detected here; the marker may be followed by other data (phone "motion photos"
    append a video) and files are judged by their content, not their extension.
    """
    return data[:2] == b'\xff\xd8' and b'\xff\xd9' not in data


def _to_uint8_channels(img: np.ndarray, channels: int) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:                       # float TIFFs and the like
        img = np.clip(img.astype(np.float32), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] in (2, 4):                        # grey+alpha, BGRA: drop alpha
        img = img[:, :, :img.shape[2] - 1]
    if channels == 1:
        return img[:, :, :1] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_image(path: str, image: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 image, atomically: the file is either absent, the old one or
    the new one, never a partial PNG. The format follows the extension. Raises ``OSError``."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(os.path.splitext(path)[1] or '.png', image)
    if not ok:
        raise OSError(f'could not encode {path}')
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(buf.tobytes())


# --------------------------------------------------------------------------- #
# Transforms
# --------------------------------------------------------------------------- #
def resize(img: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Resize to height×width (square by default): bilinear when enlarging, area averaging when
    shrinking (anti-aliased; torchvision's PIL bilinear differs from it by a few levels there)."""
    width = height if width is None else width
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    interp = cv2.INTER_AREA if height * width < h * w else cv2.INTER_LINEAR
    out = cv2.resize(img, (width, height), interpolation=interp)
    return out if out.ndim == 3 else out[:, :, None]


def to_tensor_range(img: np.ndarray) -> np.ndarray:
    """uint8 H×W×C → float32 C×H×W in [-1, 1] (ToTensor + Normalize(0.5, 0.5))."""
    return (img.astype(np.float32).transpose(2, 0, 1) / 127.5) - 1.0


def to_uint8_image(x: np.ndarray) -> np.ndarray:
    """A generator output C×H×W in [-1, 1] → H×W×C uint8 (RGB, or grey), rounded."""
    return np.clip((np.asarray(x).transpose(1, 2, 0) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def train_transform(img: np.ndarray, img_size: int, rng: np.random.Generator) -> np.ndarray:
    """Official train augmentation: random h-flip, resize to img_size+30, random img_size crop."""
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = resize(np.ascontiguousarray(img), img_size + 30)
    top, left = rng.integers(0, 31, size=2)
    return to_tensor_range(img[top:top + img_size, left:left + img_size])


def test_transform(img: np.ndarray, img_size: int) -> np.ndarray:
    """Official test transform: resize to img_size×img_size."""
    return to_tensor_range(resize(img, img_size))


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #
def split_readable(paths: Sequence[str], channels: int = 3) -> tuple[list[str], list[str]]:
    """(the paths that decode, the ones that do not): the one test of an image for training, test,
    eval and the demo, each unreadable file logged with its reason."""
    good, bad = [], []
    for path in paths:
        try:
            load_image(path, channels)
            good.append(path)
        except UnreadableImage as e:
            log.warning('skipping unreadable image: %s', e)
            bad.append(path)
    return good, bad


class ImageFolder(paddle.io.Dataset):
    """Every image under ``root``; item ``i`` (or ``(i, aug_seed)``) → (C×H×W float32, i).

    Every file is decoded once at construction: unreadable ones are dropped with a warning
    naming each (``self.skipped`` lists them) so that training never stops on a bad file, and a
    folder with no readable image is an error at start. Train mode (``augment=True``) needs an
    ``aug_seed`` with every index.
    """

    def __init__(self, root: str, img_size: int, augment: bool = False, channels: int = 3):
        super().__init__()
        self.root, self.img_size, self.augment, self.channels = root, img_size, augment, channels
        if not os.path.isdir(root):
            raise DatasetError(f'dataset folder {root} does not exist: expected '
                               f'<data_root>/<dataset>/{{trainA,trainB,testA,testB}} with images in each')
        paths = find_images(root)
        if not paths:
            raise DatasetError(f'{root} holds no image ({"/".join(IMG_EXTENSIONS)}): '
                               f'put the images of this domain there')
        self.paths, self.skipped = split_readable(paths, self.channels)
        if not self.paths:
            raise DatasetError(f'{root} holds no readable image ({len(paths)} files, all unreadable): '
                               f'replace them with valid images')
        if self.skipped:
            log.warning('%s: skipped %d unreadable of %d files', root, len(self.skipped), len(paths))

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> np.ndarray:
        """Decoded image ``index``; a file that became unreadable is replaced by the next one."""
        for offset in range(len(self.paths)):
            path = self.paths[(index + offset) % len(self.paths)]
            try:
                return load_image(path, self.channels)
            except UnreadableImage as e:
                log.warning('skipping unreadable image: %s', e)
        raise DatasetError(f'{self.root}: no image is readable any more')

    def __getitem__(self, key):
        index, aug_seed = key if isinstance(key, tuple) else (key, None)
        try:
            img = self.load(index)
        except DatasetError:
            if aug_seed is None:
                raise
            # Training: index −1 tells the trainer, which saves and stops; an exception would kill the
            # loader's worker processes in a state their shutdown can wait on forever.
            return np.zeros((self.channels, self.img_size, self.img_size), np.float32), np.int64(-1)
        if self.augment:
            if aug_seed is None:
                raise ValueError('a training ImageFolder needs (index, aug_seed) keys: use TrainSampler')
            x = train_transform(img, self.img_size, np.random.default_rng(aug_seed))
        else:
            x = test_transform(img, self.img_size)
        return x, np.int64(index)

    def stem(self, index: int) -> str:
        """The output name of image ``index`` (see ``output_stem``)."""
        return output_stem(self.paths[index], self.root)

    def fingerprint(self) -> list:
        """[image count, hash of the relative file names]: the data order is a function of these."""
        names = '\n'.join(os.path.relpath(p, self.root) for p in self.paths)
        return [len(self.paths), hashlib.sha1(names.encode()).hexdigest()[:16]]


def grid_images(train: ImageFolder, test_folder: str, n: int = 5) -> np.ndarray:
    """Fixed images for the progress grids: n train and n test images (train again without a test folder).

    The official code draws them from the running training iterators, which shifts the data stream at
    every grid; fixed images keep the stream (and exact resume) intact and show the same faces each time.
    """
    test = ImageFolder(test_folder, train.img_size, channels=train.channels) if os.path.isdir(test_folder) else train
    images = [train.load(i % len(train)) for i in range(n)] + [test.load(i % len(test)) for i in range(n)]
    return np.stack([test_transform(img, train.img_size) for img in images])


def check_dataset(data_root: str, dataset: str, domains: Sequence[str] = DOMAINS) -> str:
    """The dataset folder, after checking it and its domain folders exist (one-line error if not)."""
    folder = os.path.join(data_root, dataset)
    layout = f'{folder}/{{{",".join(domains)}}}'
    if not os.path.isdir(folder):
        raise DatasetError(f'dataset folder {folder} not found: put your images in {layout} '
                           f'(see dataset/README.md), or run with --demo')
    for domain in domains:
        path = os.path.join(folder, domain)
        if not os.path.isdir(path):
            raise DatasetError(f'{path} not found: the dataset needs {layout}')
        if not find_images(path):
            raise DatasetError(f'{path} holds no image ({", ".join(IMG_EXTENSIONS)}): '
                               f'put the images of this domain there')
    return folder


# --------------------------------------------------------------------------- #
# Sampling
# --------------------------------------------------------------------------- #
def _seed_of(*entropy: int) -> int:
    """A 64-bit seed mixed from integers (numpy's SeedSequence: well spread, stable across versions)."""
    state = np.random.SeedSequence([int(e) for e in entropy]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


class TrainSampler(paddle.io.DistributedBatchSampler):
    """Endless, resumable, rank-aware batches of (index, augmentation seed) for one domain.

    Sample k of the run (k = (step − 1)·B + j for global batch B = nranks·batch_size and
    j < B) is image perm_e[k mod N] with epoch e = k div N, where perm_e is a permutation of
    the N images drawn from (seed, stream, e): every epoch visits each image once, in a new
    order, like the official ``shuffle=True`` loader. Its flip and crop come from the seed
    (seed, stream, k). Rank r takes j ∈ [r·batch_size, (r+1)·batch_size), so R processes of
    batch b see the samples one process of batch R·b sees, and a run resumed at step s sees
    what an uninterrupted run sees from step s on.
    """

    def __init__(self, dataset: ImageFolder, batch_size: int, seed: int, stream: int,
                 start_step: int, end_step: int, num_replicas: int | None = None, rank: int | None = None):
        super().__init__(dataset, batch_size, num_replicas=num_replicas, rank=rank,
                         shuffle=False, drop_last=True)
        self.seed, self.stream = seed, stream
        self.start_step, self.end_step = start_step, end_step
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng(_seed_of(self.seed, self.stream, epoch)).permutation(len(self.dataset))
            self._perm_epoch = epoch
        return self._perm

    def batch_keys(self, step: int) -> list[tuple[int, int]]:
        """This rank's (index, aug_seed) keys for ``step`` (1-based, as the training loop)."""
        n = len(self.dataset)
        global_batch = self.nranks * self.batch_size
        first = (step - 1) * global_batch + self.local_rank * self.batch_size
        keys = []
        for k in range(first, first + self.batch_size):
            index = int(self._permutation(k // n)[k % n])
            keys.append((index, _seed_of(self.seed, self.stream, 1 << 40, k)))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step + 1):
            yield self.batch_keys(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step + 1)


@contextlib.contextmanager
def batches(dataset: paddle.io.Dataset, batch_sampler=None, batch_size: int = 1, num_workers: int = 0,
            worker_init_fn: Callable | None = None) -> Iterator:
    """Iterate a DataLoader over ``dataset`` (worker processes unless num_workers == 0); the workers
    end when the block exits, however it exits. (Paddle's multi-process iterator is kept alive by
    its own reader thread: dropping it leaves its workers running until the process ends.)"""
    order = dict(batch_sampler=batch_sampler) if batch_sampler is not None else \
        dict(batch_size=batch_size, shuffle=False, drop_last=False)
    stream = iter(paddle.io.DataLoader(dataset, num_workers=num_workers, worker_init_fn=worker_init_fn, **order))
    try:
        yield stream
    finally:
        if hasattr(stream, '_try_shutdown_all'):           # the multi-process iterator (Paddle 2.6 and 3.x)
            stream._try_shutdown_all()
