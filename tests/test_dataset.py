"""Image decoding, the official transforms, bad files, and the resumable sample stream."""
import logging
import os
import threading

import cv2
import numpy as np
import pytest

import dataset
from dataset import (DatasetError, ImageFolder, TrainSampler, UnreadableImage, check_dataset, find_images,
                     load_image, output_stem, train_transform, write_image)
from dataset import test_transform as eval_transform


def write(path, img, ext='.png', params=()):
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def rgb(h=20, w=30, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def smooth(h=20, w=30):
    """Colour gradients: lossy codecs reproduce them closely (unlike noise)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // w, y * 255 // h, (x + y) * 127 // (h + w) + 64]).astype(np.uint8)


# --------------------------------------------------------------------------- #
# Decoding and modes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize('ext', ['.png', '.bmp', '.tif', '.webp'])
def test_lossless_formats_round_trip_as_rgb(tmp_path, ext):
    img = rgb()
    path = write(tmp_path / f'a{ext}', img[:, :, ::-1], ext,                 # cv2 writes BGR
                 [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == '.webp' else [])
    np.testing.assert_array_equal(load_image(str(path)), img)


def test_jpeg_decodes_close(tmp_path):
    img = smooth()
    path = write(tmp_path / 'a.jpg', img[:, :, ::-1], '.jpg', [cv2.IMWRITE_JPEG_QUALITY, 100])
    out = load_image(str(path))
    assert out.shape == (20, 30, 3) and np.abs(out.astype(int) - img).mean() < 3


def test_odd_modes_become_rgb(tmp_path):
    grey = rgb()[:, :, 0]
    assert (load_image(str(write(tmp_path / 'g.png', grey))) == grey[:, :, None]).all()
    bgra = np.dstack([rgb()[:, :, ::-1], np.full((20, 30), 7, np.uint8)])
    np.testing.assert_array_equal(load_image(str(write(tmp_path / 'rgba.png', bgra))), rgb())
    grey16 = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)
    out16 = load_image(str(write(tmp_path / 'g16.png', grey16)))
    np.testing.assert_array_equal(out16[:, :, 0], np.round(grey16 / 257.0).astype(np.uint8))
    assert out16.shape == (20, 30, 3)
    # A grey request of an RGB image, for --img_ch 1.
    assert load_image(str(write(tmp_path / 'c.png', rgb()[:, :, ::-1])), channels=1).shape == (20, 30, 1)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    PIL = pytest.importorskip('PIL.Image')
    PIL.fromarray(smooth()).convert('CMYK').save(tmp_path / 'cmyk.jpg', quality=100)
    out = load_image(str(tmp_path / 'cmyk.jpg'))
    assert out.shape == (20, 30, 3) and np.abs(out.astype(int) - smooth()).mean() < 3


@pytest.mark.parametrize('make', ['empty', 'text', 'truncated_jpeg', 'truncated_png'])
def test_unreadable_files_raise_naming_the_file(tmp_path, make):
    path = tmp_path / {'empty': 'e.png', 'text': 't.jpg', 'truncated_jpeg': 'j.jpg', 'truncated_png': 'p.png'}[make]
    if make == 'empty':
        path.write_bytes(b'')
    elif make == 'text':
        path.write_text('not an image')
    else:
        ext = '.jpg' if make == 'truncated_jpeg' else '.png'
        data = write(tmp_path / f'full{ext}', rgb(64, 64), ext).read_bytes()
        path.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(UnreadableImage, match=path.name):
        load_image(str(path))


def test_images_are_judged_by_decoding_not_by_name_or_tail(tmp_path):
    """A JPEG followed by other data (a phone "motion photo" appends a video) and a PNG named .jpg
    decode, so they are images; only a JPEG cut before its end-of-image marker is refused."""
    img = smooth(64, 64)
    jpeg = write(tmp_path / 'photo.jpg', img[:, :, ::-1], '.jpg', [cv2.IMWRITE_JPEG_QUALITY, 100]).read_bytes()
    (tmp_path / 'motion.jpg').write_bytes(jpeg + b'ftypmp42' + bytes(range(256)) * 40)        # 10 KB of "video"
    assert np.abs(load_image(str(tmp_path / 'motion.jpg')).astype(int) - img).mean() < 3
    png = write(tmp_path / 'real.png', img[:, :, ::-1]).read_bytes()
    (tmp_path / 'named.jpg').write_bytes(png)
    np.testing.assert_array_equal(load_image(str(tmp_path / 'named.jpg')), img)
    (tmp_path / 'cut.jpg').write_bytes(jpeg[:len(jpeg) - 40])
    with pytest.raises(UnreadableImage, match='cut.jpg is a truncated JPEG'):
        load_image(str(tmp_path / 'cut.jpg'))


def test_write_image_is_atomic_and_round_trips(tmp_path, monkeypatch):
    img = rgb(12, 16)
    write_image(str(tmp_path / 'a.png'), img)
    np.testing.assert_array_equal(load_image(str(tmp_path / 'a.png')), img)
    monkeypatch.setattr(dataset.cv2, 'imencode', lambda ext, image: (True, np.frombuffer(b'new', np.uint8)))
    real_open = open

    def failing_open(path, mode='r'):
        class Failing:
            def __enter__(self):
                self.file = real_open(path, mode)
                return self

            def write(self, data):
                self.file.write(data[:1])
                raise OSError(28, 'No space left on device')

            def __exit__(self, *exc):
                self.file.close()
        return Failing()
    monkeypatch.setattr(dataset, 'open', failing_open, raising=False)
    with pytest.raises(OSError):
        write_image(str(tmp_path / 'a.png'), img)
    monkeypatch.undo()
    np.testing.assert_array_equal(load_image(str(tmp_path / 'a.png')), img)       # the old file, whole
    assert os.listdir(tmp_path) == ['a.png']                                     # no temporary left


def test_decompression_bomb_is_rejected_not_allocated(tmp_path):
    """A PNG whose header announces 60000×60000 pixels (3.6 GB) is refused by name, not decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)
    header = struct.pack('>IIBBBBB', 60000, 60000, 8, 0, 0, 0, 0)
    path = tmp_path / 'bomb.png'
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0' * 1000))
                     + chunk(b'IEND', b''))
    with pytest.raises(UnreadableImage, match='bomb.png'):
        load_image(str(path))


def test_large_image_is_converted(tmp_path):
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, 2000:] = 200
    x = eval_transform(load_image(str(write(tmp_path / 'big.png', big))), 64)
    assert x.shape == (3, 64, 64) and x[:, :, :31].max() < -0.99 and x[:, :, 33:].min() > 0.5


def test_find_images_is_recursive_sorted_and_filters_extensions(tmp_path):
    for name in ['b.png', 'a.JPG', 'sub/c.webp', 'notes.txt', 'sub/deep/d.tif']:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'x')
    found = [os.path.relpath(p, tmp_path) for p in find_images(str(tmp_path))]
    assert found == ['a.JPG', 'b.png', 'sub/c.webp', 'sub/deep/d.tif']
    assert [output_stem(p, str(tmp_path)) for p in find_images(str(tmp_path))] == ['a', 'b', 'sub__c', 'sub__deep__d']


def test_symlink_loops_neither_hang_nor_count_twice(tmp_path):
    for name in ['a.png', 'sub/b.png']:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'x')
    os.symlink(tmp_path, tmp_path / 'sub' / 'loop_to_root')          # two loops
    os.symlink(tmp_path / 'sub', tmp_path / 'sub' / 'loop_to_self')
    os.symlink(tmp_path / 'sub', tmp_path / 'linked_sub')            # the same folder twice
    found = []
    walk = threading.Thread(target=lambda: found.extend(find_images(str(tmp_path))), daemon=True)
    walk.start()
    walk.join(timeout=60)                # an unguarded walk follows the loops for hours
    assert not walk.is_alive(), 'find_images follows symlink loops'
    assert sorted(os.path.basename(p) for p in found) == ['a.png', 'b.png']


# --------------------------------------------------------------------------- #
# Transforms
# --------------------------------------------------------------------------- #
def test_test_transform_range_and_shape():
    x = eval_transform(rgb(40, 50), 32)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert -1 <= x.min() and x.max() <= 1
    flat = np.full((8, 8, 3), 255, np.uint8)
    np.testing.assert_array_equal(eval_transform(flat, 8), np.ones((3, 8, 8), np.float32))


def test_train_transform_is_flip_resize_crop():
    img = rgb(64, 64)
    outs = [train_transform(img, 32, np.random.default_rng(s)) for s in range(40)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert len({o.tobytes() for o in outs}) > 30                         # random crops differ
    again = train_transform(img, 32, np.random.default_rng(3))
    np.testing.assert_array_equal(again, outs[3])                        # seeded: reproducible
    # Every output is a 32×32 window of the (flipped) image resized to 62×62.
    big = cv2.resize(img, (62, 62), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(5)
    flip = rng.random() < 0.5
    top, left = rng.integers(0, 31, size=2)
    src = cv2.resize(np.ascontiguousarray(img[:, ::-1]), (62, 62), interpolation=cv2.INTER_AREA) if flip else big
    expected = src[top:top + 32, left:left + 32].astype(np.float32).transpose(2, 0, 1) / 127.5 - 1
    np.testing.assert_allclose(outs[5], expected, atol=1e-6)


# --------------------------------------------------------------------------- #
# Bad dataset folders and files
# --------------------------------------------------------------------------- #
def test_missing_dataset_folder_names_path_and_layout(tmp_path):
    with pytest.raises(DatasetError, match=r'dataset folder .*nope not found.*trainA,trainB,testA,testB'):
        check_dataset(str(tmp_path), 'nope')


def test_missing_or_empty_domain(tmp_path):
    for d in ('trainA', 'trainB', 'testA'):
        write(tmp_path / 'ds' / d / 'x.png', rgb())
    with pytest.raises(DatasetError, match=r'testB not found'):
        check_dataset(str(tmp_path), 'ds')
    (tmp_path / 'ds' / 'testB').mkdir()
    (tmp_path / 'ds' / 'testB' / 'readme.txt').write_text('no images here')
    with pytest.raises(DatasetError, match=r'testB holds no image'):
        check_dataset(str(tmp_path), 'ds')


def test_unreadable_images_are_skipped_and_counted(tmp_path, caplog):
    write(tmp_path / 'good1.png', rgb())
    write(tmp_path / 'good2.png', rgb(seed=1))
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8\xff garbage')
    (tmp_path / 'zero.png').write_bytes(b'')
    with caplog.at_level(logging.WARNING, logger='ugatit'):
        data = ImageFolder(str(tmp_path), 32)
    assert len(data) == 2 and sorted(os.path.basename(p) for p in data.skipped) == ['broken.jpg', 'zero.png']
    assert 'broken.jpg' in caplog.text and 'zero.png' in caplog.text and 'skipped 2 unreadable of 4' in caplog.text


def test_domain_with_no_readable_image_fails_at_start(tmp_path):
    (tmp_path / 'a.png').write_bytes(b'junk')
    with pytest.raises(DatasetError, match='no readable image'):
        ImageFolder(str(tmp_path), 32)


def test_file_broken_during_training_is_replaced_not_fatal(tmp_path, caplog):
    write(tmp_path / 'a.png', rgb())
    write(tmp_path / 'b.png', rgb(seed=1))
    data = ImageFolder(str(tmp_path), 32)
    (tmp_path / 'a.png').write_bytes(b'')                      # breaks after the start check
    with caplog.at_level(logging.WARNING, logger='ugatit'):
        x, index = data[0]
    assert x.shape == (3, 32, 32) and 'a.png' in caplog.text
    np.testing.assert_array_equal(x, data[1][0])


# --------------------------------------------------------------------------- #
# The sample stream
# --------------------------------------------------------------------------- #
class Sized:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def stream(n, batch, start, end, ranks=1, rank=0, seed=0):
    return list(TrainSampler(Sized(n), batch, seed, 0, start, end, num_replicas=ranks, rank=rank))


def test_sampler_visits_every_image_once_per_epoch():
    keys = [k for b in stream(7, 1, 1, 21) for k in b]
    for epoch in range(3):
        assert sorted(i for i, _ in keys[7 * epoch:7 * epoch + 7]) == list(range(7))
    assert [i for i, _ in keys[:7]] != [i for i, _ in keys[7:14]]            # reshuffled
    assert len({s for _, s in keys}) == 21                                     # a seed per sample


def test_sampler_resume_and_ranks_see_the_single_run_samples():
    full = stream(5, 2, 1, 12)
    assert stream(5, 2, 7, 12) == full[6:]                                    # resume at step 7
    rank0, rank1 = stream(5, 1, 1, 12, ranks=2, rank=0), stream(5, 1, 1, 12, ranks=2, rank=1)
    assert [a + b for a, b in zip(rank0, rank1)] == full                      # 2 × batch 1 = 1 × batch 2
    assert stream(5, 2, 1, 12, seed=1) != full
