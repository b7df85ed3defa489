"""extras/demo_data.py: the offline photo ↔ cartoon demo dataset and its ground-truth error."""
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataset import DatasetError, load_image, write_image
from extras import demo_data

# Small builds keep the tests fast; the code path is the same as the default.
SMALL = dict(size=48, n_train=10, n_test=5, seed=3)


def build_small(root: Path, **overrides) -> Path:
    return Path(demo_data.build_demo_dataset(str(root), **{**SMALL, **overrides}))


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob('*.png'))


def all_file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def small_dataset(tmp_path_factory) -> Path:
    return build_small(tmp_path_factory.mktemp('shared'))


@pytest.fixture(scope='module')
def photo_crops() -> list[np.ndarray]:
    """Eight 128 px crops, one per source photo plus one, at the default size."""
    photos = demo_data.load_source_photos()
    specs = demo_data.sample_crop_specs(photos, 8, 128, np.random.default_rng(7))
    return [demo_data.render_crop(photos, spec, 128) for spec in specs]


def test_layout_counts_and_images(small_dataset):
    for domain, count in {'trainA': 10, 'trainB': 10, 'testA': 5, 'testB': 5}.items():
        files = pngs(small_dataset / domain)
        assert len(files) == count, domain
        assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape == (48, 48, 3) for p in files)
    assert 'unpaired' in (small_dataset / 'README.md').read_text()


def test_train_is_unpaired_and_test_paired_by_stem(small_dataset):
    train_b = [load_image(str(p)) for p in pngs(small_dataset / 'trainB')]
    for path in pngs(small_dataset / 'trainA'):
        assert not any(np.array_equal(demo_data.cartoonize(load_image(str(path))), b) for b in train_b), path
    for path in pngs(small_dataset / 'testA'):
        np.testing.assert_array_equal(load_image(str(small_dataset / 'testB' / path.name)),
                                      demo_data.cartoonize(load_image(str(path))))


def test_build_is_reproducible_offline_and_seeded(tmp_path, small_dataset, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('demo_data tried to open a network connection')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    assert all_file_bytes(build_small(tmp_path / 'again')) == all_file_bytes(small_dataset)
    other = build_small(tmp_path / 'other', seed=4)
    assert [p.read_bytes() for p in pngs(other / 'trainA')] != [p.read_bytes() for p in pngs(small_dataset / 'trainA')]


@pytest.mark.parametrize('change, rebuilt', [('nothing', False), ('remove an image', True), ('other size', True),
                                             ('force', True)])
def test_rebuild_rules(tmp_path, change, rebuilt):
    folder = build_small(tmp_path)
    inode = folder.stat().st_ino
    overrides = {}
    if change == 'remove an image':
        pngs(folder / 'trainB')[0].unlink()
    elif change == 'other size':
        overrides['size'] = 56
    elif change == 'force':
        overrides['force'] = True
    assert build_small(tmp_path, **overrides) == folder
    assert (folder.stat().st_ino != inode) == rebuilt                 # a fresh folder is swapped in whole
    assert demo_data.is_complete(folder, **{**SMALL, **{k: v for k, v in overrides.items() if k != 'force'}})
    assert [p.name for p in tmp_path.iterdir()] == ['demo']          # no staging leftovers


@pytest.mark.parametrize('force', [False, True])
def test_a_folder_without_build_info_is_never_replaced(tmp_path, force):
    """Without its build_info.json a folder may be anybody's data: refused, left as it is."""
    folder = build_small(tmp_path)
    (folder / demo_data.BUILD_INFO_FILE).unlink()
    before = all_file_bytes(folder)
    with pytest.raises(DatasetError, match='holds data the demo did not build'):
        build_small(tmp_path, force=force)
    assert all_file_bytes(folder) == before


def test_interrupted_build_leaves_no_dataset(tmp_path, monkeypatch):
    calls = []

    def failing_cartoonize(img):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt('simulated interruption')
        return img
    monkeypatch.setattr(demo_data, 'cartoonize', failing_cartoonize)
    with pytest.raises(KeyboardInterrupt):
        build_small(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cartoonize_is_a_deterministic_posterised_filter(photo_crops):
    """Same output twice, input untouched, shape kept; it changes every crop by more than lightness
    quantisation alone guarantees (bands of 32 of the 8-bit L channel move a pixel by 8 levels on
    average, 0.031) and keeps under a tenth of the distinct colours."""
    for crop in photo_crops:
        untouched = crop.copy()
        cartoon = demo_data.cartoonize(crop)
        np.testing.assert_array_equal(cartoon, demo_data.cartoonize(crop))
        np.testing.assert_array_equal(crop, untouched)
        assert cartoon.shape == crop.shape and cartoon.dtype == np.uint8
        assert np.mean(np.abs(cartoon.astype(float) - crop)) / 255 > 0.03
        assert len(np.unique(cartoon.reshape(-1, 3), axis=0)) * 10 < len(np.unique(crop.reshape(-1, 3), axis=0))
    assert demo_data.cartoonize(np.zeros((37, 53, 3), np.uint8)).shape == (37, 53, 3)
    with pytest.raises(ValueError, match='RGB uint8'):
        demo_data.cartoonize(np.zeros((8, 8, 3), np.float32))


def test_cartoonize_draws_black_outlines_and_flat_regions():
    img = np.full((64, 64, 3), 90, np.uint8)
    cv2.circle(img, (32, 32), 18, (230, 180, 60), thickness=-1)
    cartoon = demo_data.cartoonize(img)
    assert np.any(np.all(cartoon == 0, axis=2))
    assert len(np.unique(cartoon[26:39, 26:39].reshape(-1, 3), axis=0)) == 1


def test_translation_error(tmp_path, small_dataset):
    """Mean |pixel| in [0, 1] over the stems both folders hold, nested files included, predictions
    resized to the ground truth; zero for identical folders."""
    pred, gt = tmp_path / 'pred', tmp_path / 'gt'
    write_image(str(gt / 'x.png') if gt.mkdir() is None else '', np.full((4, 4, 3), 100, np.uint8))
    (pred / 'sub').mkdir(parents=True)
    (gt / 'sub').mkdir()
    write_image(str(pred / 'x.png'), np.full((8, 8, 3), 151, np.uint8))            # resized to 4×4
    write_image(str(gt / 'sub' / 'y.png'), np.zeros((4, 4, 3), np.uint8))
    write_image(str(pred / 'sub' / 'y.png'), np.zeros((4, 4, 3), np.uint8))
    write_image(str(pred / 'only_pred.png'), np.zeros((4, 4, 3), np.uint8))
    assert demo_data.translation_error(str(pred), str(gt)) == pytest.approx(0.1)    # x: 51/255, y: 0
    test_b = str(small_dataset / 'testB')
    assert demo_data.translation_error(test_b, test_b) == 0.0
    with pytest.raises(ValueError, match='no image file stems in common'):
        demo_data.translation_error(str(small_dataset / 'trainA'), test_b)


def test_command_line_builds_and_prints_path(tmp_path, capsys):
    demo_data.main(['--root', str(tmp_path), '--size', '32', '--n_train', '4', '--n_test', '2'])
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / 'demo') and demo_data.is_complete(printed, size=32, n_train=4, n_test=2, seed=0)
