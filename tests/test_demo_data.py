"""Tests for demo_data.py: the offline photo <-> cartoon demo dataset."""

import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

import demo_data

# Small builds keep the tests fast; the code path is the same as the default.
SMALL = dict(size=48, n_train=10, n_test=5, seed=3)


def build_small(root: Path, **overrides) -> Path:
    return Path(demo_data.build_demo_dataset(str(root), **{**SMALL, **overrides}))


def png_files(folder: Path) -> list[Path]:
    return sorted(folder.glob('*.png'))


def read_rgb(path: Path) -> np.ndarray:
    return demo_data.read_rgb(path)


def all_file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def all_mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in [folder, *sorted(folder.rglob('*'))]}


@pytest.fixture(scope='module')
def small_dataset(tmp_path_factory) -> Path:
    return build_small(tmp_path_factory.mktemp('shared'))


@pytest.fixture(scope='module')
def photo_crops() -> list[np.ndarray]:
    """Eight 128 px crops, one per source photo plus one, at the default size."""
    photos = demo_data.load_source_photos()
    specs = demo_data.sample_crop_specs(photos, 8, 128, np.random.default_rng(7))
    return [demo_data.render_crop(photos, spec, 128) for spec in specs]


# --------------------------------------------------------------------------
# Layout and content
# --------------------------------------------------------------------------

def test_layout_and_counts(small_dataset):
    assert small_dataset.name == 'demo'
    expected = {'trainA': SMALL['n_train'], 'trainB': SMALL['n_train'],
                'testA': SMALL['n_test'], 'testB': SMALL['n_test']}
    for domain, count in expected.items():
        assert len(png_files(small_dataset / domain)) == count, domain
    readme = (small_dataset / 'README.md').read_text()
    assert 'unpaired' in readme and 'paired' in readme
    assert 'translation_error' in readme


def test_images_are_rgb_uint8_of_requested_size(small_dataset):
    size = SMALL['size']
    for domain in demo_data.DOMAINS:
        for path in png_files(small_dataset / domain):
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert img.dtype == np.uint8, path
            assert img.shape == (size, size, 3), path


def test_build_is_byte_identical_for_same_arguments(tmp_path, small_dataset):
    rebuilt = build_small(tmp_path / 'again')
    first, second = all_file_bytes(small_dataset), all_file_bytes(rebuilt)
    assert sorted(first) == sorted(second)
    assert first == second


def test_seed_changes_the_crops(tmp_path, small_dataset):
    other = build_small(tmp_path, seed=SMALL['seed'] + 1)
    first = [p.read_bytes() for p in png_files(small_dataset / 'trainA')]
    second = [p.read_bytes() for p in png_files(other / 'trainA')]
    assert first != second


def test_train_is_unpaired(small_dataset):
    train_b = [read_rgb(p) for p in png_files(small_dataset / 'trainB')]
    for path in png_files(small_dataset / 'trainA'):
        cartoon = demo_data.cartoonize(read_rgb(path))
        assert not any(np.array_equal(cartoon, b) for b in train_b), path
    stems_a = {p.stem for p in png_files(small_dataset / 'trainA')}
    stems_b = {p.stem for p in png_files(small_dataset / 'trainB')}
    assert not stems_a & stems_b


def test_test_is_paired_by_stem(small_dataset):
    test_a = png_files(small_dataset / 'testA')
    assert [p.name for p in test_a] == [p.name for p in png_files(small_dataset / 'testB')]
    for path in test_a:
        expected = demo_data.cartoonize(read_rgb(path))
        assert np.array_equal(read_rgb(small_dataset / 'testB' / path.name), expected), path


def test_build_does_not_use_the_network(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('demo_data tried to open a network connection')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    folder = build_small(tmp_path)
    assert len(png_files(folder / 'testB')) == SMALL['n_test']


# --------------------------------------------------------------------------
# Rebuild rules and atomicity
# --------------------------------------------------------------------------

def test_complete_dataset_is_not_rebuilt(tmp_path):
    folder = build_small(tmp_path)
    before = all_mtimes(folder)
    assert build_small(tmp_path) == folder
    assert all_mtimes(folder) == before


def test_incomplete_dataset_is_rebuilt(tmp_path):
    folder = build_small(tmp_path)
    original = all_file_bytes(folder)
    removed = png_files(folder / 'trainB')[0]
    removed.unlink()
    inode_before = folder.stat().st_ino
    build_small(tmp_path)
    assert folder.stat().st_ino != inode_before  # a fresh folder was swapped in
    assert all_file_bytes(folder) == original
    assert [p.name for p in tmp_path.iterdir()] == ['demo']  # no staging leftovers


def test_folder_without_build_info_is_rebuilt(tmp_path):
    folder = build_small(tmp_path)
    (folder / demo_data.BUILD_INFO_FILE).unlink()  # right image counts, no marker
    build_small(tmp_path)
    assert (folder / demo_data.BUILD_INFO_FILE).is_file()


def test_other_arguments_trigger_rebuild(tmp_path):
    folder = build_small(tmp_path)
    build_small(tmp_path, size=SMALL['size'] + 8)
    img = read_rgb(png_files(folder / 'testA')[0])
    assert img.shape[:2] == (SMALL['size'] + 8, SMALL['size'] + 8)


def test_force_rebuilds_complete_dataset(tmp_path):
    folder = build_small(tmp_path)
    inode_before = folder.stat().st_ino
    build_small(tmp_path, force=True)
    assert folder.stat().st_ino != inode_before


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
    assert not demo_data.is_complete(tmp_path / 'demo', **SMALL)


# --------------------------------------------------------------------------
# cartoonize
# --------------------------------------------------------------------------

def test_cartoonize_is_deterministic_and_keeps_shape_and_dtype(photo_crops):
    for crop in photo_crops:
        untouched = crop.copy()
        first, second = demo_data.cartoonize(crop), demo_data.cartoonize(crop)
        assert first.shape == crop.shape and first.dtype == np.uint8
        assert np.array_equal(first, second)
        assert np.array_equal(crop, untouched)  # input not modified


def test_cartoonize_keeps_non_square_shape():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    assert demo_data.cartoonize(img).shape == (37, 53, 3)


def test_cartoonize_changes_the_image(photo_crops):
    # Lightness quantisation alone, with bands of 32 levels of the 8-bit L
    # channel and band-centre reconstruction, moves a pixel by step/4 = 8
    # levels on average (~0.031 in [0, 1] RGB units) when L is spread evenly
    # inside each band; the black outlines only add to that. 0.03 per crop is
    # therefore a floor that any natural crop clears (measured: 0.035-0.14 on
    # the default build, mean 0.085).
    for crop in photo_crops:
        change = np.mean(np.abs(demo_data.cartoonize(crop).astype(float) - crop)) / 255
        assert change > 0.03


def test_cartoonize_reduces_distinct_colours(photo_crops):
    # The output palette is 8 lightness bands x a chroma grid of step 12,
    # plus black; on 128 px photo crops it keeps about 1% of the input's
    # distinct colours (measured max 0.98%), so a factor 10 has ample margin.
    for crop in photo_crops:
        n_input = len(np.unique(crop.reshape(-1, 3), axis=0))
        n_cartoon = len(np.unique(demo_data.cartoonize(crop).reshape(-1, 3), axis=0))
        assert n_cartoon * 10 < n_input


def test_cartoonize_draws_black_outlines_and_flat_regions():
    # A bright disc on a mid-grey background: the rim on the darker side
    # gets black outline pixels, and the interior stays one flat colour.
    img = np.full((64, 64, 3), 90, np.uint8)
    cv2.circle(img, (32, 32), 18, (230, 180, 60), thickness=-1)
    cartoon = demo_data.cartoonize(img)
    assert np.any(np.all(cartoon == 0, axis=2))
    centre = cartoon[26:39, 26:39].reshape(-1, 3)
    assert len(np.unique(centre, axis=0)) == 1


def test_cartoonize_rejects_non_rgb_uint8():
    with pytest.raises(ValueError, match='RGB uint8'):
        demo_data.cartoonize(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match='RGB uint8'):
        demo_data.cartoonize(np.zeros((8, 8, 3), np.float32))


# --------------------------------------------------------------------------
# translation_error
# --------------------------------------------------------------------------

def test_translation_error_is_zero_for_identical_folders(small_dataset):
    test_b = str(small_dataset / 'testB')
    assert demo_data.translation_error(test_b, test_b) == 0.0


def test_translation_error_identity_baseline_is_positive(small_dataset):
    error = demo_data.translation_error(str(small_dataset / 'testA'),
                                        str(small_dataset / 'testB'))
    assert 0.0 < error <= 1.0
    assert error > 0.03  # same floor as in test_cartoonize_changes_the_image


def test_translation_error_matches_hand_computed_value(tmp_path):
    pred_dir, gt_dir = tmp_path / 'pred', tmp_path / 'gt'
    pred_dir.mkdir()
    gt_dir.mkdir()
    demo_data.write_rgb_png(gt_dir / 'x.png', np.full((4, 4, 3), 100, np.uint8))
    demo_data.write_rgb_png(pred_dir / 'x.png', np.full((4, 4, 3), 151, np.uint8))
    demo_data.write_rgb_png(gt_dir / 'y.png', np.zeros((4, 4, 3), np.uint8))
    demo_data.write_rgb_png(pred_dir / 'y.png', np.zeros((4, 4, 3), np.uint8))
    demo_data.write_rgb_png(pred_dir / 'only_pred.png', np.zeros((4, 4, 3), np.uint8))
    # x: 51/255 = 0.2, y: 0; only_pred has no ground truth and is ignored.
    assert demo_data.translation_error(str(pred_dir), str(gt_dir)) == pytest.approx(0.1)


def test_translation_error_resizes_prediction_to_ground_truth(tmp_path, small_dataset):
    big_dir = tmp_path / 'big'
    big_dir.mkdir()
    for path in png_files(small_dataset / 'testB'):
        img = read_rgb(path)
        big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        demo_data.write_rgb_png(big_dir / path.name, big)
    # Area-averaging 2x2 blocks of equal pixels gives the original back exactly.
    assert demo_data.translation_error(str(big_dir), str(small_dataset / 'testB')) == 0.0


def test_translation_error_without_common_stems_names_both_folders(small_dataset):
    train_a, train_b = str(small_dataset / 'trainA'), str(small_dataset / 'trainB')
    with pytest.raises(ValueError, match='no image file stems in common') as info:
        demo_data.translation_error(train_a, train_b)
    assert train_a in str(info.value) and train_b in str(info.value)


def test_translation_error_missing_folder(tmp_path, small_dataset):
    with pytest.raises(FileNotFoundError, match='nope'):
        demo_data.translation_error(str(tmp_path / 'nope'), str(small_dataset / 'testB'))


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def test_command_line_builds_and_prints_path(tmp_path, capsys):
    demo_data.main(['--root', str(tmp_path), '--size', '32', '--n_train', '4',
                    '--n_test', '2'])
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / 'demo')
    assert demo_data.is_complete(printed, size=32, n_train=4, n_test=2, seed=0)
