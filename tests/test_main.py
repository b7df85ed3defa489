"""The command line end to end: arguments, train → checkpoint → test, bad input, the demo."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import main
from conftest import ROOT, cli as run_cli, one_line_error


# --------------------------------------------------------------------------- #
# Arguments
# --------------------------------------------------------------------------- #
def test_official_arguments_and_defaults():
    args = main.parse_args(['--device', 'cpu'])
    official = dict(phase='train', light=False, dataset='YOUR_DATASET_NAME', iteration=1000000, batch_size=1,
                    print_freq=1000, save_freq=100000, decay_flag=True, lr=0.0001, weight_decay=0.0001,
                    adv_weight=1, cycle_weight=10, identity_weight=10, cam_weight=1000, ch=64, n_res=4,
                    n_dis=6, img_size=256, img_ch=3, result_dir='results', benchmark_flag=False, resume=False)
    assert {k: getattr(args, k) for k in official} == official
    assert args.seed == 0 and args.data_root == 'dataset'


@pytest.mark.parametrize('text, value', [('True', True), ('true', True), ('1', True), ('yes', True),
                                         ('False', False), ('false', False), ('0', False), ('no', False)])
def test_booleans_parse(text, value):
    assert main.parse_args(['--light', text, '--device', 'cpu']).light is value


@pytest.mark.parametrize('junk', ['ture', 'rue', 'Flase', '2', ''])
def test_booleans_reject_junk(junk, capsys):
    with pytest.raises(SystemExit) as e:
        main.parse_args(['--light', junk, '--device', 'cpu'])
    assert e.value.code == 2
    assert f'expected a boolean (True/False), got {junk!r}' in capsys.readouterr().err


def test_device_defaults_to_what_paddle_was_built_for():
    import paddle
    assert main.parse_args([]).device == ('gpu' if paddle.device.is_compiled_with_cuda() else 'cpu')
    assert main.parse_args(['--device', 'cuda']).device == 'gpu'


@pytest.mark.parametrize('argv, message', [
    (['--img_size', '64'], '--img_size must be a multiple of 4 and at least 96'),
    (['--img_size', '98'], '--img_size must be a multiple of 4'),
    (['--batch_size', '0'], '--batch_size must be at least 1'),
    (['--n_dis', '3'], '--n_dis must be >= 4'),
    (['--smoothing', 'True'], '--smoothing is an option of the TensorFlow architecture'),
])
def test_bad_values_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        main.parse_args(argv + ['--device', 'cpu'])
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_demo_defaults_are_overridable():
    args = main.parse_args(['--demo'])
    assert (args.dataset, args.light, args.img_size) == ('demo', True, 96)
    assert main.parse_args(['--demo', '--iteration', '7', '--ch', '4']).iteration == 7
    assert main.parse_args(['--iteration', '7']).dataset == 'YOUR_DATASET_NAME'


# --------------------------------------------------------------------------- #
# End to end
# --------------------------------------------------------------------------- #
def test_cli_train_then_test(tmp_path, tiny_data):
    out = run_cli(tmp_path, tiny_data, '--iteration', '4', '--print_freq', '2', '--save_freq', '2')
    model = sorted(os.listdir(out / 'model'))
    names = ['tiny_params_0000002.pdparams', 'tiny_params_0000004.pdparams', 'tiny_params_latest.pdparams']
    assert model == sorted(names + [n + '.json' for n in names])            # each with its sidecar
    grid = cv2.imread(str(out / 'img' / 'A2B_0000004.png'))
    assert grid.shape == (7 * 96, 10 * 96, 3)                            # 7 rows, 5 train + 5 test columns
    assert sorted(os.listdir(out / 'img')) == ['A2B_0000002.png', 'A2B_0000004.png',
                                               'B2A_0000002.png', 'B2A_0000004.png']

    run_cli(tmp_path, tiny_data, '--phase', 'test')
    test = out / 'test'
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(tiny_data / 'tiny' / 'testA'))
    assert sorted(os.path.splitext(f)[0] for f in os.listdir(test / 'A2B')) == stems
    assert cv2.imread(str(test / 'A2B' / (stems[0] + '.png'))).shape == (96, 96, 3)
    assert cv2.imread(str(test / 'A2B_1.png')).shape == (7 * 96, 96, 3)
    assert {f'A2B_{i}.png' for i in (1, 2, 3)} | {f'B2A_{i}.png' for i in (1, 2, 3)} <= set(os.listdir(test))
    assert json.loads((out / 'options_train.json').read_text())['iteration'] == 4


@pytest.mark.parametrize('phase', ['test', 'infer', 'export', 'eval'])
def test_phases_before_training_are_one_line_errors(tmp_path, tiny_data, phase):
    with pytest.raises(SystemExit) as e:
        run_cli(tmp_path, tiny_data, '--phase', phase, '--input', str(tiny_data))
    message = str(e.value.code)
    assert message.startswith('error: no checkpoint in ') and 'train first' in message and '\n' not in message


def test_later_phases_take_the_architecture_from_the_checkpoint(tmp_path, tiny_data):
    """Train with --ch 8 --n_res 2, then test with no architecture flag; a flag that disagrees is one line."""
    common = ['--dataset', 'tiny', '--data_root', str(tiny_data), '--result_dir', str(tmp_path / 'results'),
              '--device', 'cpu', '--num_workers', '0', '--img_size', '96']
    main.main(common + ['--light', 'True', '--ch', '8', '--n_res', '2', '--iteration', '1'])
    main.main(common + ['--phase', 'test'])
    info = json.loads((tmp_path / 'results' / 'tiny' / 'test' / 'info.json').read_text())
    assert (info['arch']['ch'], info['arch']['n_res'], info['arch']['light']) == (8, 2, True)
    with pytest.raises(SystemExit) as e:
        main.main(common + ['--phase', 'test', '--ch', '16'])
    assert '--ch 8 (checkpoint) vs 16 (given)' in str(e.value.code) and '\n' not in str(e.value.code)


def test_missing_dataset_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        run_cli(tmp_path, tmp_path / 'nowhere', '--iteration', '1')
    message = str(e.value.code)
    assert '\n' not in message
    assert 'nowhere/tiny not found' in message and '{trainA,trainB,testA,testB}' in message


def test_empty_domain_is_a_one_line_error(tmp_path, tiny_data):
    import shutil
    root = tmp_path / 'data'
    shutil.copytree(tiny_data / 'tiny', root / 'tiny')
    for f in os.listdir(root / 'tiny' / 'trainB'):
        os.remove(root / 'tiny' / 'trainB' / f)
    with pytest.raises(SystemExit) as e:
        run_cli(tmp_path, root, '--iteration', '1')
    assert 'trainB holds no image' in str(e.value.code) and '\n' not in str(e.value.code)


def test_corrupt_image_is_skipped_and_training_runs(tmp_path, tiny_data, caplog):
    import shutil
    root = tmp_path / 'data'
    shutil.copytree(tiny_data / 'tiny', root / 'tiny')
    (root / 'tiny' / 'trainA' / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    run_cli(tmp_path, root, '--iteration', '2', '--print_freq', '100')
    assert 'corrupt.png' in caplog.text and 'skipped 1 unreadable' in caplog.text
    assert (tmp_path / 'results' / 'tiny' / 'model' / 'tiny_params_latest.pdparams').exists()


def test_the_demo_never_replaces_a_dataset_it_did_not_build(tmp_path):
    """``--demo --dataset NAME`` builds the demo data under NAME: a user's own NAME is never replaced."""
    mine = tmp_path / 'data' / 'mine'
    for domain in ('trainA', 'trainB', 'testA', 'testB'):
        (mine / domain).mkdir(parents=True)
        cv2.imwrite(str(mine / domain / 'photo.png'), np.full((96, 96, 3), 128, np.uint8))
    before = {p: p.read_bytes() for p in mine.rglob('*.png')}
    with pytest.raises(SystemExit) as e:
        main.main(['--demo', '--dataset', 'mine', '--data_root', str(tmp_path / 'data'), '--result_dir',
                   str(tmp_path / 'results'), '--iteration', '1'])
    assert 'holds data the demo did not build' in one_line_error(e)
    assert {p: p.read_bytes() for p in mine.rglob('*.png')} == before


@pytest.mark.slow
def test_the_demo_run_twice_replaces_its_previous_run(tmp_path):
    argv = ['--demo', '--data_root', str(tmp_path / 'data'), '--result_dir', str(tmp_path / 'results'),
            '--iteration', '2', '--print_freq', '1', '--save_freq', '2']
    main.main(argv)
    main.main(argv)
    model = tmp_path / 'results' / 'demo' / 'model'
    assert sorted(p.name for p in model.glob('*.pdparams')) == ['demo_params_0000002.pdparams',
                                                                 'demo_params_latest.pdparams']
    assert (tmp_path / 'results' / 'demo' / 'demo_error.json').exists()


@pytest.mark.slow
def test_demo_training_improves_translation_error(tmp_path):
    """The demo's B is a known filter of A: a short training must bring A2B closer to it."""
    main.main(['--demo', '--data_root', str(tmp_path / 'data'), '--result_dir', str(tmp_path / 'results'),
               '--iteration', '60', '--print_freq', '60'])
    errors = json.loads((tmp_path / 'results' / 'demo' / 'demo_error.json').read_text())
    assert errors['trained'] < errors['untrained'] - 0.02, errors
    assert os.path.exists(tmp_path / 'data' / 'demo' / 'testB')


@pytest.mark.slow
@pytest.mark.parametrize('command, message', [
    (['main.py', '--phase', 'test', '--dataset', 'nothing', '--device', 'cpu'], 'dataset folder'),
    (['convert.py', '--src', 'nothing', '--dst', 'out', '--dataset', 'x'], 'does not exist'),
    (['predict.py', '--model', 'nothing/genA2B', '--input', '.'], 'no exported generator'),
    (['metrics.py', '--real', 'nothing', '--fake', 'nothing'], 'image folder nothing does not exist'),
])
def test_entry_points_print_their_error_alone(tmp_path, command, message):
    """What a user sees in the terminal: the one error line, nothing Paddle prints on import."""
    run = subprocess.run([sys.executable, os.path.join(ROOT, command[0])] + command[1:], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stdout == ''
    assert run.stderr.startswith('error: ') and message in run.stderr and run.stderr.count('\n') == 1, run.stderr
