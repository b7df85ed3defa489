"""Translate your own images (--phase infer), export for Paddle Inference / ONNX, and predict.py."""
import importlib.util
import os

import cv2
import numpy as np
import paddle
import pytest

import main
import predict
from conftest import REQUIRE_ALL, tiny_argv
from dataset import infer_transform


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_data):
    """A tiny model trained for one step: (common argv, result folder)."""
    out = tmp_path_factory.mktemp('deploy')
    argv = tiny_argv(out, tiny_data)
    main.main(argv + ['--iteration', '1'])
    return argv, out / 'tiny'


def photo(path, h, w, seed=0):
    img = np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def test_infer_one_image_any_size(trained, tmp_path):
    argv, _ = trained
    src = photo(tmp_path / 'in' / 'wide.jpg', 90, 150)
    main.main(argv + ['--phase', 'infer', '--input', str(src), '--output', str(tmp_path / 'a')])
    assert cv2.imread(str(tmp_path / 'a' / 'wide.png')).shape == (96, 96, 3)          # centred square crop
    main.main(argv + ['--phase', 'infer', '--input', str(src), '--output', str(tmp_path / 'b'),
                      '--keep_size', 'True', '--direction', 'B2A'])
    assert cv2.imread(str(tmp_path / 'b' / 'wide.png')).shape == (90, 150, 3)         # back to the input size


def test_infer_folder_skips_unreadable_files(trained, tmp_path, caplog):
    argv, results = trained
    photo(tmp_path / 'in' / 'a.png', 100, 100)
    photo(tmp_path / 'in' / 'sub' / 'b.png', 64, 200, seed=1)
    (tmp_path / 'in' / 'broken.jpg').write_bytes(b'not a jpeg')
    main.main(argv + ['--phase', 'infer', '--input', str(tmp_path / 'in')])
    out = results / 'infer' / 'A2B'
    assert sorted(os.listdir(out)) == ['a.png', 'sub__b.png']
    assert 'broken.jpg' in caplog.text


@pytest.mark.parametrize('extra, message', [([], 'needs --input'),
                                            (['--input', '/nowhere/x.jpg'], '/nowhere/x.jpg does not exist')])
def test_infer_bad_input_is_a_one_line_error(trained, extra, message):
    argv, _ = trained
    with pytest.raises(SystemExit) as e:
        main.main(argv + ['--phase', 'infer'] + extra)
    assert message in str(e.value.code) and '\n' not in str(e.value.code)


def test_export_matches_dygraph_and_predict_runs(trained, tmp_path):
    argv, results = trained
    main.main(argv + ['--phase', 'export'])
    export = results / 'export'
    assert {'genA2B.pdiparams', 'genB2A.pdiparams', 'export_info.json'} <= set(os.listdir(export))

    from UGATIT import UGATIT
    gan = UGATIT(main.parse_args(argv))
    gan.build_model()
    gan.load_newest()
    gan.genA2B.eval()
    x = np.random.RandomState(0).uniform(-1, 1, (3, 3, 96, 96)).astype(np.float32)     # batch 3: dynamic
    with paddle.no_grad():
        expected = gan.genA2B(paddle.to_tensor(x))[0].numpy()
    loaded = paddle.jit.load(str(export / 'genA2B'))
    np.testing.assert_allclose(loaded(paddle.to_tensor(x)).numpy(), expected, atol=1e-5)
    predictor = predict.create_predictor(str(export / 'genA2B'))
    np.testing.assert_allclose(predict.translate(predictor, x), expected, atol=1e-4)

    src = photo(tmp_path / 'in' / 'p.png', 120, 100)
    out = predict.main(['--model', str(export / 'genA2B'), '--input', str(src), '--output', str(tmp_path / 'pred')])
    result = cv2.imread(os.path.join(out, 'p.png'))[:, :, ::-1]
    with paddle.no_grad():
        direct = gan.genA2B(paddle.to_tensor(infer_transform(cv2.imread(str(src))[:, :, ::-1], 96)[None]))[0]
    direct = np.clip((direct[0].numpy().transpose(1, 2, 0) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(result.astype(int) - direct.astype(int)).max() <= 1

    if importlib.util.find_spec('paddle2onnx') and importlib.util.find_spec('onnxruntime'):
        import onnxruntime
        session = onnxruntime.InferenceSession(str(export / 'genA2B.onnx'), providers=['CPUExecutionProvider'])
        onnx_out = session.run(None, {session.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(onnx_out, expected, atol=1e-4)
    else:
        assert not REQUIRE_ALL, 'paddle2onnx and onnxruntime are missing: the ONNX export was not checked'
        assert not (export / 'genA2B.onnx').exists()


def test_predict_without_export_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match='export_info.json|no exported model'):
        predict.main(['--model', str(tmp_path / 'genA2B'), '--input', str(tmp_path)])


def test_test_phase_engines_agree(trained, tmp_path):
    """--test_engine inference (Paddle Inference, oneDNN) writes what eager Paddle writes (to 1/255)."""
    argv, results = trained
    outputs = {}
    for engine in ('dygraph', 'inference'):
        main.main(argv + ['--phase', 'test', '--test_engine', engine])
        test = results / 'test'
        outputs[engine] = {name: cv2.imread(str(test / name)).astype(int)
                           for name in ['A2B_1.png', 'B2A_3.png'] + [f'A2B/{f}' for f in os.listdir(test / 'A2B')]}
    for name, image in outputs['dygraph'].items():
        assert np.abs(image - outputs['inference'][name]).max() <= 1, name
    assert not [f for f in os.listdir(results) if f.startswith('.engine-')]      # the compiled program is removed


def cpu_has_bf16() -> bool:
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


@pytest.fixture(scope='module')
def generators():
    from networks import ResnetGenerator
    paddle.seed(3)
    pair = [ResnetGenerator(3, 3, ngf=8, n_blocks=2, img_size=32, light=True) for _ in range(2)]
    for g in pair:
        g.eval()
    return pair


def test_strip_engine_batches_and_bf16(generators, tmp_path):
    """A batch of 8 gives each image's batch-1 result; bfloat16 stays within bfloat16 rounding."""
    from export import strip_engine
    real = np.random.RandomState(0).uniform(-1, 1, (8, 3, 32, 32)).astype(np.float32)
    fp32 = strip_engine(*generators, 3, 32, str(tmp_path / 'fp32'))
    batched = fp32(real)
    for i in (0, 5):
        for whole, alone in zip(batched, fp32(real[i:i + 1])):
            np.testing.assert_allclose(whole[i:i + 1], alone, rtol=1e-4, atol=1e-5)
    with paddle.no_grad():
        eager = generators[0](paddle.to_tensor(real))[0].numpy()
    np.testing.assert_allclose(batched[0], eager, atol=1e-5)
    bf16 = strip_engine(*generators, 3, 32, str(tmp_path / 'bf16'), bf16=True)(real)
    error = np.abs(bf16[0] - batched[0])            # translations in [-1, 1]
    assert error.max() < 0.1 and error.mean() < 0.01, (error.max(), error.mean())
    if cpu_has_bf16():
        assert error.max() > 0                      # it did run in bfloat16


def test_test_batch_size_rule(tmp_path):
    from conftest import tiny_args
    from UGATIT import UGATIT
    assert UGATIT(tiny_args(tmp_path)).test_batch_size() == 8                                # 96 px, ch 4
    assert UGATIT(tiny_args(tmp_path, '--img_size', '256', '--ch', '64')).test_batch_size() == 1


def test_cpu_threads(monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    assert predict.cpu_threads() == 3
    monkeypatch.delenv('OMP_NUM_THREADS')
    assert predict.cpu_threads() == len(os.sched_getaffinity(0))
