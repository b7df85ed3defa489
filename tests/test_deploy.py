"""Translate your own images (--phase infer, face crop), export for Paddle Inference / ONNX, predict.py,
and the test phase's Paddle Inference engine."""
import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest

import main
import predict
from conftest import REQUIRE_ALL, tiny_argv
from dataset import load_image
from extras import deploy


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_data):
    """A tiny model trained for one step: (common argv, run folder)."""
    out = tmp_path_factory.mktemp('deploy')
    argv = tiny_argv(out, tiny_data)
    main.main(argv + ['--iteration', '1'])
    return argv, out / 'tiny'


def photo(path, h, w, seed=0):
    img = np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def astronaut() -> np.ndarray:
    """A photo with one frontal face, shipped inside scikit-image (512×512)."""
    import skimage.data
    return load_image(str(Path(skimage.data.__file__).parent / 'astronaut.png'))


def generator_of(argv, name='genA2B'):
    from UGATIT import UGATIT
    gan = UGATIT(main.parse_args(argv))
    gan.build_model()
    gan.load_newest()
    return gan.networks()[name]


# --------------------------------------------------------------------------- #
# Your own photos
# --------------------------------------------------------------------------- #
def test_infer_one_image_any_size(trained, tmp_path):
    argv, _ = trained
    src = photo(tmp_path / 'in' / 'wide.jpg', 90, 150)
    main.main(argv + ['--phase', 'infer', '--input', str(src), '--output', str(tmp_path / 'a')])
    assert cv2.imread(str(tmp_path / 'a' / 'wide.png')).shape == (96, 96, 3)          # centred square crop
    main.main(argv + ['--phase', 'infer', '--input', str(src), '--output', str(tmp_path / 'b'),
                      '--keep_size', 'True', '--direction', 'B2A'])
    assert cv2.imread(str(tmp_path / 'b' / 'wide.png')).shape == (90, 150, 3)         # back to the input size


def test_infer_writes_the_generator_output_of_the_framed_input(trained, tmp_path):
    argv, _ = trained
    src = photo(tmp_path / 'in' / 'p.png', 120, 100)
    main.main(argv + ['--phase', 'infer', '--input', str(src), '--output', str(tmp_path / 'out')])
    img = load_image(str(src))
    framing = deploy.Framing(96)
    expected = framing.output(deploy.eager_translator(generator_of(argv))(framing.input(img)[None])[0], img.shape)
    np.testing.assert_array_equal(load_image(str(tmp_path / 'out' / 'p.png')), expected)
    assert framing.input(img).shape == (3, 96, 96)


def test_infer_folder_skips_unreadable_files(trained, tmp_path, caplog):
    argv, results = trained
    photo(tmp_path / 'in' / 'a.png', 100, 100)
    photo(tmp_path / 'in' / 'sub' / 'b.png', 64, 200, seed=1)
    (tmp_path / 'in' / 'broken.jpg').write_bytes(b'not a jpeg')
    main.main(argv + ['--phase', 'infer', '--input', str(tmp_path / 'in')])
    assert sorted(os.listdir(results / 'infer' / 'A2B')) == ['a.png', 'sub__b.png']
    assert 'broken.jpg' in caplog.text


@pytest.mark.parametrize('extra, message', [([], 'needs --input'),
                                            (['--input', '/nowhere/x.jpg'], '/nowhere/x.jpg does not exist')])
def test_infer_bad_input_is_a_one_line_error(trained, extra, message):
    argv, _ = trained
    with pytest.raises(SystemExit) as e:
        main.main(argv + ['--phase', 'infer'] + extra)
    assert message in str(e.value.code) and '\n' not in str(e.value.code)


def test_face_crop_finds_the_face(tmp_path):
    """OpenCV's bundled detector finds the astronaut's face: a square around it, inside the photo, and
    the same square (to a few pixels: the detector's scan grid) in a shifted, letterboxed copy."""
    img = astronaut()
    top, left, side = deploy.face_box(img)
    assert 100 < side < 400 and 0 <= top <= 512 - side and 0 <= left <= 512 - side
    assert deploy.crop_face(img).shape == (side, side, 3)
    canvas = np.zeros((600, 640, 3), np.uint8)
    canvas[60:572, 100:612] = img
    shifted = deploy.face_box(canvas)
    assert abs(shifted[0] - (top + 60)) <= 6 and abs(shifted[1] - (left + 100)) <= 6 and abs(shifted[2] - side) <= 0.05 * side
    with pytest.raises(deploy.NoFaceFound):
        deploy.face_box(np.zeros((200, 300, 3), np.uint8))


def test_infer_face_crop_and_the_no_face_message(trained, tmp_path, caplog):
    argv, _ = trained
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'face.png'), astronaut()[:, :, ::-1])
    main.main(argv + ['--phase', 'infer', '--input', str(tmp_path / 'in' / 'face.png'), '--face_crop', 'True',
                      '--output', str(tmp_path / 'out')])
    assert cv2.imread(str(tmp_path / 'out' / 'face.png')).shape == (96, 96, 3)
    photo(tmp_path / 'noface' / 'noise.png', 100, 100)
    with pytest.raises(SystemExit) as e:
        main.main(argv + ['--phase', 'infer', '--input', str(tmp_path / 'noface'), '--face_crop', 'True'])
    assert 'no face found: try --face_crop False' in str(e.value.code) and '\n' not in str(e.value.code)
    assert 'noise.png: no face found' in caplog.text


# --------------------------------------------------------------------------- #
# Export, predict.py, ONNX
# --------------------------------------------------------------------------- #
def test_export_matches_eager_and_predict_runs(trained, tmp_path):
    argv, results = trained
    main.main(argv + ['--phase', 'export'])
    export = results / 'export'
    assert {'genA2B.pdiparams', 'genB2A.pdiparams', 'export_info.json'} <= set(os.listdir(export))
    translate = deploy.eager_translator(generator_of(argv))
    x = np.random.RandomState(0).uniform(-1, 1, (3, 3, 96, 96)).astype(np.float32)     # batch 3: dynamic
    expected = translate(x)
    np.testing.assert_allclose(paddle.jit.load(str(export / 'genA2B'))(paddle.to_tensor(x)).numpy(), expected, atol=1e-5)
    predictor = deploy.create_predictor(str(export / 'genA2B'))
    np.testing.assert_allclose(deploy.run_predictor(predictor, x)[0], expected, atol=1e-4)

    src = photo(tmp_path / 'in' / 'p.png', 120, 100)
    out = predict.main(['--model', str(export / 'genA2B'), '--input', str(src), '--output', str(tmp_path / 'pred')])
    img = load_image(str(src))
    direct = deploy.Framing(96).output(translate(deploy.Framing(96).input(img)[None])[0], img.shape)
    assert np.abs(load_image(os.path.join(out, 'p.png')).astype(int) - direct.astype(int)).max() <= 1

    if importlib.util.find_spec('paddle2onnx') and importlib.util.find_spec('onnxruntime'):
        import onnxruntime
        session = onnxruntime.InferenceSession(str(export / 'genA2B.onnx'), providers=['CPUExecutionProvider'])
        np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], expected, atol=1e-4)
    else:
        assert not REQUIRE_ALL, 'paddle2onnx and onnxruntime are missing: the ONNX export was not checked'


def test_predict_without_export_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match='no exported generator at .*: run python main.py --phase export first'):
        predict.main(['--model', str(tmp_path / 'genA2B'), '--input', str(tmp_path)])


# --------------------------------------------------------------------------- #
# The test phase's engine
# --------------------------------------------------------------------------- #
def cpu_has_bf16() -> bool:
    with open('/proc/cpuinfo') as f:
        flags = f.read()
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


@pytest.fixture(scope='module')
def strip_model():
    from networks import ResnetGenerator
    paddle.seed(3)
    model = deploy.StripModel(*[ResnetGenerator(3, 3, ngf=8, n_blocks=2, img_size=32, light=True) for _ in range(2)])
    model.eval()
    return model


def test_strip_engine_equals_eager_batches_and_bf16(strip_model):
    """The Paddle Inference program gives eager Paddle's six outputs (to float rounding), each
    image's batch-1 result inside a batch of 8, and bfloat16 stays within bfloat16 rounding."""
    real = np.random.RandomState(0).uniform(-1, 1, (8, 3, 32, 32)).astype(np.float32)
    engine = deploy.strip_engine(strip_model, 3, 32)
    batched = engine(real)
    for whole, eager in zip(batched, strip_model.run_eager(real)):
        np.testing.assert_allclose(whole, eager, rtol=1e-4, atol=2e-5)
    for i in (0, 5):
        for whole, alone in zip(batched, engine(real[i:i + 1])):
            np.testing.assert_allclose(whole[i:i + 1], alone, rtol=1e-4, atol=1e-5)
    error = np.abs(deploy.strip_engine(strip_model, 3, 32, bf16=True)(real)[0] - batched[0])
    assert error.max() < 0.1 and error.mean() < 0.01, (error.max(), error.mean())
    if cpu_has_bf16():
        assert error.max() > 0                      # it did run in bfloat16


def test_cpu_threads(monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    assert deploy.cpu_threads() == 3
    monkeypatch.delenv('OMP_NUM_THREADS')
    assert deploy.cpu_threads() == len(os.sched_getaffinity(0))
