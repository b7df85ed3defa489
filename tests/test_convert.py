"""convert.py: official PyTorch state dicts → our networks and checkpoints, strictly.

The official weights are the initial state dicts recorded in tests/fixtures/parity_*.npz
(official names and torch layouts, see make_parity_fixtures.py); no torch needed.
"""
import os
import shutil
import sys

import numpy as np
import paddle
import pytest

import convert
import main
from conftest import FIXTURES, OUTPUTS, group, parity_fixture as fixture, rel_error, tiny_argv, to_input
from extras.convert import ConversionError, convert_state_dict, infer_arch, load_converted, read_official
from networks import NETWORKS, Discriminator, ResnetGenerator
from UGATIT import UGATIT


def official(config='light') -> dict:
    """{network: {official name: float32 array}} of a fixture's initial state."""
    return {n: group(fixture(config), f'init/{n}') for n in NETWORKS}


def light_generator():
    return ResnetGenerator(3, 3, ngf=4, n_blocks=1, img_size=96, light=True)


def write_npz(path, nets: dict) -> str:
    np.savez(path, **{f'{n}/{k}': v for n, state in nets.items() for k, v in state.items()})
    return str(path)


# --------------------------------------------------------------------------- #
# One network
# --------------------------------------------------------------------------- #
def test_linear_weights_are_transposed_by_name():
    torch_state = official()['genA2B']
    converted = convert_state_dict(torch_state, light_generator())
    # gamma, beta, FC.0 and FC.2 are square in the light model: a shape check cannot tell.
    for key in ('FC.0.weight', 'FC.2.weight', 'gamma.weight', 'beta.weight', 'gap_fc.weight', 'gmp_fc.weight'):
        assert np.array_equal(converted[key], torch_state[key].T), key
    for key in ('DownBlock.1.weight', 'conv1x1.weight', 'conv1x1.bias', 'UpBlock2.3.rho', 'UpBlock1_1.norm1.rho'):
        assert np.array_equal(converted[key], torch_state[key]), key


def test_spectral_norm_tensors_carry_over():
    """weight_orig (a Linear one transposed), weight_u and weight_v, under the same names."""
    torch_state = official()['disGA']
    d = Discriminator(3, 4, 7)
    converted = convert_state_dict(torch_state, d)
    assert set(converted) == set(d.state_dict()) == set(torch_state)
    assert np.array_equal(converted['gap_fc.weight_orig'], torch_state['gap_fc.weight_orig'].T)
    for key in ('gap_fc.weight_u', 'gap_fc.weight_v', 'model.1.weight_orig', 'model.1.weight_u',
                'model.1.weight_v', 'conv.weight_u'):
        assert np.array_equal(converted[key], torch_state[key]), key
    load_converted(d, converted)
    assert 'weight' not in d.gap_fc.state_dict()            # Paddle keeps the normalised weight out


def test_torch_parametrization_names_are_accepted():
    """torch.nn.utils.parametrizations.spectral_norm names the same three tensors differently."""
    torch_state = official()['disLA']
    renamed = {}
    for key, value in torch_state.items():
        for ours, theirs in (('.weight_orig', '.parametrizations.weight.original'),
                             ('.weight_u', '.parametrizations.weight.0._u'),
                             ('.weight_v', '.parametrizations.weight.0._v')):
            if key.endswith(ours):
                key = key[:-len(ours)] + theirs
        renamed[key] = value
    d = Discriminator(3, 4, 5)
    a, b = convert_state_dict(torch_state, d), convert_state_dict(renamed, d)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_every_problem_is_listed():
    torch_state = dict(official()['genA2B'])
    del torch_state['gamma.weight']
    del torch_state['UpBlock2.3.rho']
    torch_state['UpBlock1_2.conv1.weight'] = np.zeros((16, 16, 3, 3), np.float32)
    torch_state['conv1x1.weight'] = np.zeros((16, 32, 3, 3), np.float32)
    torch_state['FC.0.weight'] = np.zeros((16, 17), np.float32)
    with pytest.raises(ConversionError) as e:
        convert_state_dict(torch_state, light_generator(), 'genA2B')
    message = str(e.value)
    assert message.startswith('genA2B: ') and '5 problems' in message
    for part in ('missing gamma.weight', 'missing UpBlock2.3.rho', 'extra UpBlock1_2.conv1.weight',
                 'mis-shaped conv1x1.weight', 'mis-shaped FC.0.weight: official (16, 17) after transposing'):
        assert part in message, part


@pytest.mark.filterwarnings('ignore:Skip loading')
def test_load_converted_checks_what_set_state_dict_only_warns_about():
    g = light_generator()
    converted = convert_state_dict(official()['genA2B'], g)
    # Paddle's set_state_dict skips a wrongly shaped entry with a warning and keeps the old value.
    bad = dict(converted, **{'FC.0.weight': converted['FC.0.weight'][:, :8]})
    with pytest.raises(ConversionError, match='FC.0.weight'):
        load_converted(g, bad, 'genA2B')
    load_converted(g, converted, 'genA2B')
    assert all(np.array_equal(v.numpy(), converted[k]) for k, v in g.state_dict().items())


# --------------------------------------------------------------------------- #
# The architecture from the shapes
# --------------------------------------------------------------------------- #
OFFICIAL_VARIANT = dict(arch='pytorch', norm='adalin', cam_g=True, cam_d=True, self_attn='none', smoothing=False)


def test_infer_arch():
    assert infer_arch(official('light')) == dict(light=True, img_size=256, ch=4, n_res=1, n_dis=6, img_ch=3,
                                                 **OFFICIAL_VARIANT)
    assert infer_arch(official('light'), img_size=96)['img_size'] == 96
    # The full model's γ/β MLP sees the whole (img_size/4)² bottleneck: its size is in the weights.
    assert infer_arch(official('full')) == dict(light=False, img_size=96, ch=2, n_res=1, n_dis=6, img_ch=3,
                                                **OFFICIAL_VARIANT)
    with pytest.raises(ConversionError, match='trained at 96 px'):
        infer_arch(official('full'), img_size=256)


def test_infer_arch_rejects_unpaired_discriminator_depths():
    nets = official()
    nets['disLA'] = {k: v for k, v in nets['disLA'].items() if not k.startswith('model.10.')}
    with pytest.raises(ConversionError, match='local discriminator'):
        infer_arch(nets)


# --------------------------------------------------------------------------- #
# Whole checkpoints and the command line
# --------------------------------------------------------------------------- #
def test_cli_converts_an_official_checkpoint_for_test_and_resume(tmp_path, tiny_data, caplog, capsys, monkeypatch):
    """One command, no torch; the result loads with fresh Adam state, tests, resumes and computes as official.

    The source is a real torch.save file of the official state dicts (tests/fixtures/official_light_init.pt,
    written by make_parity_fixtures.py).
    """
    monkeypatch.setitem(sys.modules, 'torch', None)                        # `import torch` would fail
    src = str(tmp_path / 'tiny_params_0000042.pt')
    shutil.copy(os.path.join(FIXTURES, 'official_light_init.pt'), src)
    model_dir = tmp_path / 'results' / 'tiny' / 'model'
    path = convert.main(['--src', src, '--dst', str(model_dir), '--img_size', '96'])
    assert path == str(model_dir / 'tiny_params_0000042.pdparams')
    state = paddle.load(path)
    assert state['step'] == 42 and 'G_optim' not in state and 'D_optim' not in state
    assert state['arch'] == dict(light=True, img_size=96, ch=4, n_res=1, n_dis=6, img_ch=3, **OFFICIAL_VARIANT)
    assert capsys.readouterr().out.splitlines()[-1] == 'main.py flags: --dataset tiny --light True --img_size 96 --ch 4 --n_res 1'

    argv = tiny_argv(tmp_path / 'results', tiny_data)
    gan = UGATIT(main.parse_args(argv))
    gan.build_model()
    assert gan.load(path, weights_only=False) == 42                       # no optimizer state: fresh Adam
    fx = fixture('light')
    gan.set_mode(False)
    with paddle.no_grad():
        for key, value in zip(OUTPUTS, gan.networks()['genA2B'](to_input(fx['forward_images']))):
            assert rel_error(value.numpy(), fx[f'eval/genA2B/{key}']) < 1e-4

    main.main(argv + ['--phase', 'test'])
    assert len(os.listdir(tmp_path / 'results' / 'tiny' / 'test' / 'A2B')) == 3
    main.main(argv + ['--phase', 'train', '--resume', 'True', '--iteration', '43', '--print_freq', '1000',
                      '--save_freq', '1000'])
    assert 'resumed from' in caplog.text and paddle.load(str(model_dir / 'tiny_params_latest.pdparams'))['step'] == 43


def test_cli_full_model_to_a_file(tmp_path):
    src = write_npz(tmp_path / 'weights.npz', official('full'))
    dst = tmp_path / 'out' / 'converted.pdparams'
    assert convert.main(['--src', src, '--dst', str(dst), '--step', '7']) == str(dst)
    state = paddle.load(str(dst))
    assert state['step'] == 7 and state['arch']['light'] is False and state['arch']['img_size'] == 96
    net = ResnetGenerator(3, 3, ngf=2, n_blocks=1, img_size=96, light=False)
    net.set_state_dict(state['genB2A'])
    expected = convert_state_dict(official('full')['genB2A'], net)
    assert all(np.array_equal(v.numpy(), expected[k]) for k, v in net.state_dict().items())


def test_step_needed_when_the_name_has_none(tmp_path):
    src = write_npz(tmp_path / 'tiny_params_latest.npz', official('light'))
    with pytest.raises(SystemExit, match='pass --step'):
        convert.main(['--src', src, '--dst', str(tmp_path / 'x.pdparams')])


def test_incomplete_checkpoint_is_an_error(tmp_path):
    nets = official('light')
    del nets['disLB']
    nets['G_optim'] = {'state': np.zeros(1)}
    src = write_npz(tmp_path / 'tiny_params_0000001.npz', nets)
    with pytest.raises(SystemExit, match=r"missing networks \['disLB'\]; unknown entries \['G_optim'\]"):
        convert.main(['--src', src, '--dst', str(tmp_path / 'x.pdparams')])
    assert not (tmp_path / 'x.pdparams').exists()


def test_official_pt_reads_as_the_recorded_arrays():
    nets = read_official(os.path.join(FIXTURES, 'official_light_init.pt'))
    expected = official('light')
    assert set(nets) == set(expected)
    for net, state in expected.items():
        assert set(nets[net]) == set(state), net
        for k, v in state.items():
            np.testing.assert_array_equal(nets[net][k], v, err_msg=f'{net}.{k}')


def test_unreadable_pt_is_a_one_line_error(tmp_path):
    src = tmp_path / 'selfie2anime_params_0100000.pt'
    src.write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit) as e:
        convert.main(['--src', str(src), '--dst', str(tmp_path / 'out.pdparams')])
    message = str(e.value)
    assert message.startswith('error: ') and 'not a readable torch checkpoint' in message and '\n' not in message


# --------------------------------------------------------------------------- #
# Crafted torch files: bounded by the file's own size
# --------------------------------------------------------------------------- #
def crafted_torch_file(path, kind: str) -> str:
    """A small torch.save-format file whose fields announce a huge allocation: a tensor view of
    60000×60000 elements over a 1-element storage (zip), or a storage of 2^40 elements (legacy)."""
    import pickle
    import types
    import zipfile

    torch, utils = types.ModuleType('torch'), types.ModuleType('torch._utils')
    storage = type('FloatStorage', (), {'__module__': 'torch', '__qualname__': 'FloatStorage'})
    torch.FloatStorage = storage

    def _rebuild_tensor_v2(*args):
        pass
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = 'torch._utils', '_rebuild_tensor_v2'
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    class Reduce:
        def __reduce__(self):
            return _rebuild_tensor_v2, (StorageRef(), 0, (60000, 60000) if kind == 'view' else (4,),
                                        (0, 0) if kind == 'view' else (1,), False, {})

    class StorageRef:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, StorageRef):
                return ('storage', storage, '0', 'cpu', 1 if kind == 'view' else 4, None)
            return None
    saved = {name: sys.modules.get(name) for name in ('torch', 'torch._utils')}
    sys.modules.update({'torch': torch, 'torch._utils': utils})
    try:
        import io
        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump({'w': Reduce()})
        state = buffer.getvalue()
        if kind == 'view':
            with zipfile.ZipFile(path, 'w') as archive:
                archive.writestr('archive/data.pkl', state)
                archive.writestr('archive/data/0', np.zeros(1, np.float32).tobytes())
        else:
            with open(path, 'wb') as f:
                for header in (0x1950a86a20f9469cfc6c, 1001, {'little_endian': True}):
                    pickle.dump(header, f, protocol=2)
                f.write(state)
                pickle.dump(['0'], f, protocol=2)
                f.write(np.int64(2 ** 40).tobytes() + np.zeros(4, np.float32).tobytes())
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return str(path)


@pytest.mark.parametrize('kind, message', [('view', 'does not fit its storage'), ('legacy', 'truncated data')])
def test_a_crafted_pt_is_refused_without_allocating_what_it_announces(tmp_path, kind, message):
    """Read under a 1.5 GB address-space limit: announcing 14 GB (view) or 4 TB (legacy) must end in
    the one-line error, not in an allocation."""
    import subprocess
    src = crafted_torch_file(tmp_path / 'evil_params_0000001.pt', kind)
    code = ('import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20)); '
            f'sys.path.insert(0, {os.getcwd()!r}); from extras.torch_file import read_torch_file\n'
            f'try:\n    read_torch_file({src!r})\nexcept ValueError as e:\n    print("refused:", e)')
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and 'refused:' in run.stdout and message in run.stdout, run.stdout + run.stderr
    with pytest.raises(SystemExit) as e:
        convert.main(['--src', src, '--dst', str(tmp_path / 'out')])
    assert message in str(e.value.code) and '\n' not in str(e.value.code)
