"""The web app (app.py) in a real browser: Debian's chromium, headless, driven by Selenium with Debian's
chromedriver (packages chromium and chromium-driver; nothing is downloaded at test time).

The app serves a tiny model trained for one step. What the page shows must equal ``main.py --phase
infer`` on the same image and checkpoint pixel for pixel: the page shows a PNG (lossless) of the
generator output, and both sides run the same eager Paddle code on the CPU. Screenshots go to each
test's tmp folder; ``UGATIT_SAVE_SCREENSHOT=PATH`` also copies the translation's to PATH.
"""
import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import paddle
import pytest

import convert
import main
from conftest import FIXTURES, ROOT, copy_checkpoint, data_file, one_line_error, tf_prefix, tiny_argv
from dataset import find_images, load_image, resize, to_uint8_image
from extras import checkpoints as ckpt
from extras.checkpoints import candidates
from extras.deploy import Framing
from utils import cam

pytest.importorskip('gradio', reason='pip install -r requirements-app.txt')
app = pytest.importorskip('extras.webapp')
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:                      # the browser tests skip (fail in CI, where UGATIT_REQUIRE_ALL=1)
    webdriver = None

CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
TIMEOUT = 60                       # seconds for the app to start and for one translation


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_data):
    """main.py flags of a tiny model trained for one step, and its checkpoint."""
    argv = tiny_argv(tmp_path_factory.mktemp('app'), tiny_data)
    main.main(argv + ['--iteration', '1'])
    args = main.parse_args(argv)
    return argv, candidates(os.path.join(args.result_dir, 'tiny', 'model'), 'tiny')[0][1]


# --------------------------------------------------------------------------- #
# Without a browser: reading photos, refusing checkpoints
# --------------------------------------------------------------------------- #
def test_huge_grey_and_transparent_photos_are_read_with_a_note(tmp_path):
    cv2.imwrite(str(tmp_path / 'huge.png'), np.zeros((3000, 4100), np.uint8))
    img, notes = app.read_photo(str(tmp_path / 'huge.png'), 3)
    assert img.shape == (1499, 2048, 3)
    assert notes == ['grey image: converted to RGB', 'downscaled from 4100×3000 to 2048×1499']
    cv2.imwrite(str(tmp_path / 'rgba.png'), np.full((40, 30, 4), 200, np.uint8))
    img, notes = app.read_photo(str(tmp_path / 'rgba.png'), 3)
    assert img.shape == (40, 30, 3) and notes == ['transparency dropped']


@pytest.mark.parametrize('content, message', [(None, 'does not exist'), (b'garbage', 'is corrupt')])
def test_a_checkpoint_that_does_not_load_is_one_line(tmp_path, content, message):
    path = tmp_path / 'model.pdparams'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as e:
        app.main(['--checkpoint', str(path)])
    assert message in one_line_error(e)


def refusal(*argv: str) -> str:
    """The one error line of ``python app.py argv``."""
    with pytest.raises(SystemExit) as e:
        app.main(list(argv))
    return one_line_error(e)


def run_the_advice(message: str) -> None:
    """The commands a refusal gives: convert.py's, then app.py's checkpoint loaded."""
    convert_command, app_command = message.split('convert it first: ')[1].split(', then ')
    convert.main(shlex.split(convert_command)[2:])
    args = app.parse_args(shlex.split(app_command)[2:])
    app.load_generators(*app.find_checkpoint(args.checkpoint, args.result_dir, args.dataset))


@pytest.mark.parametrize('given', ['model folder', 'run folder'])
def test_a_folder_serves_its_newest_checkpoint_that_loads(trained, tmp_path, monkeypatch, caplog, given):
    """results/tiny/model or results/tiny: a corrupt newer checkpoint is skipped, the one served is logged."""
    model_dir = tmp_path / 'tiny' / 'model'
    shutil.copytree(os.path.dirname(trained[1]), model_dir)
    (model_dir / 'tiny_params_0000009.pdparams').write_bytes(b'garbage')
    monkeypatch.setattr(app.gr.Blocks, 'launch', lambda self, **kwargs: None)
    reads, read = [], ckpt.read_checkpoint

    def counted_read(path):
        reads.append(path)
        return read(path)
    monkeypatch.setattr(ckpt, 'read_checkpoint', counted_read)
    monkeypatch.setattr(app, 'read_checkpoint', counted_read)
    app.main(['--checkpoint', str(model_dir if given == 'model folder' else model_dir.parent),
              '--data_root', str(tmp_path)])
    served = model_dir / os.path.basename(trained[1])
    assert f'serving its newest checkpoint that loads, {served}' in caplog.text
    assert reads.count(str(served)) == 1                                   # read once, not to find and again to load


TF_FORMS = {'its .index': lambda p: p + '.index', 'its .data': data_file, 'its .meta': lambda p: p + '.meta',
            'its prefix': str, 'its checkpoint file': lambda p: os.path.join(os.path.dirname(p), 'checkpoint'),
            'its folder': os.path.dirname, 'the release folder': lambda p: os.path.dirname(os.path.dirname(p))}


@pytest.mark.parametrize('form', list(TF_FORMS))
def test_the_authors_tf_checkpoint_is_refused_with_the_commands_that_convert_and_serve_it(tmp_path, monkeypatch, form):
    prefix = copy_checkpoint(tf_prefix('light', 3), tmp_path)
    Path(prefix + '.meta').write_bytes(b'\x0a\x00')                         # the release has one; the fixture not
    monkeypatch.chdir(tmp_path)
    message = refusal('--checkpoint', TF_FORMS[form](prefix))
    assert "the authors' TensorFlow checkpoint, not one of this repository: convert it first: python convert.py " \
           f"--src {prefix} --dst results/tiny/model --dataset tiny --generators_only True" in message
    run_the_advice(message)


@pytest.mark.parametrize('fixture, name', [('official_light_init.pt', 'tiny_params_0000007.pt'),
                                           ('official_light_init.pt', 'weights.bin'),          # torch.save's zip
                                           ('torch_state_legacy.pth', 'weights.ckpt')])        # its legacy format
def test_pytorch_weights_are_refused_with_the_commands_that_convert_and_serve_them(tmp_path, monkeypatch, fixture,
                                                                                    name):
    shutil.copy(os.path.join(FIXTURES, fixture), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    message = refusal('--checkpoint', name)
    assert f'{name} holds PyTorch weights, not a checkpoint of this repository: convert it first' in message
    if name.endswith('.pt'):
        run_the_advice(message)
    else:
        assert f'--src {name} --dst results/<dataset>/model --dataset <dataset> --step <step>' in message


@pytest.mark.parametrize('case, message', [
    ('a folder', 'is a folder without checkpoints of this repository: pass a .pdparams file that main.py or '
                 'convert.py wrote'),
    ('photo.png', 'photo.png is an image (PNG), not a checkpoint'),
    ('notes.txt', 'notes.txt is not a checkpoint of this repository'),
    ('model.pdparams.json', 'is the JSON sidecar of the checkpoint'),
])
def test_what_is_not_a_checkpoint_is_named(tmp_path, case, message):
    path = tmp_path / case
    if case == 'a folder':
        path.mkdir()
    elif case == 'photo.png':
        cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    else:
        path.write_text('{}\n')
    assert message in refusal('--checkpoint', str(path))


@pytest.mark.parametrize('port, message', [('busy', 'port {} on 127.0.0.1 is in use: pass another --port'),
                                           ('99999', '--port {} is not a valid port (1-65535)')])
def test_a_busy_or_invalid_port_is_one_line_before_the_model_loads(tmp_path, port, message):
    """The checkpoint does not exist: the port's error shows that the port was checked first."""
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = str(busy.getsockname()[1]) if port == 'busy' else port
        shown = refusal('--checkpoint', str(tmp_path / 'missing.pdparams'), '--host', '127.0.0.1', '--port', port)
    assert shown == 'error: ' + message.format(port)


def test_gradio_failing_to_listen_is_one_line(trained, tmp_path, monkeypatch):
    """The port taken after app.py checked it: Gradio's OSError at launch."""
    monkeypatch.setattr(app, 'port_problem', lambda host, port: None)
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        shown = refusal('--checkpoint', trained[1], '--host', '127.0.0.1', '--port', str(port),
                        '--data_root', str(tmp_path))
    assert shown == f'error: Gradio cannot serve on 127.0.0.1 (Cannot find empty port in range: {port}-{port}): ' \
                    f'pass another --port'


@pytest.mark.slow
def test_python_app_py_with_a_busy_port_prints_one_line_and_exits_1(tmp_path):
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run([sys.executable, 'app.py', '--checkpoint', str(tmp_path / 'missing.pdparams'), '--host',
                              '127.0.0.1', '--port', str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (1, '', f'error: port {port} on 127.0.0.1 is in use: pass '
                                                               f'another --port\n')


# --------------------------------------------------------------------------- #
# The app, served, in a browser
# --------------------------------------------------------------------------- #
def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def app_url(trained, tiny_data, tmp_path_factory):
    """``python app.py --checkpoint ...`` serving on a free local port, stopped whatever happens."""
    port, log = free_port(), tmp_path_factory.mktemp('app_log') / 'app.log'
    env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp('gradio')))
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, 'app.py', '--checkpoint', trained[1], '--host', '127.0.0.1',
                                 '--port', str(port), '--dataset', 'tiny', '--data_root', str(tiny_data)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}/'
    try:
        wait_until_serving(proc, url, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_serving(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f'app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}')
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f'app.py did not answer at {url} within {TIMEOUT} s:\n{log.read_text()[-3000:]}')


@pytest.fixture(scope='module')
def browser():
    """Headless chromium with a fresh profile, no background traffic, and its network log."""
    if webdriver is None:
        pytest.skip('pip install selenium')
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            pytest.skip(f'{path} missing: apt-get install chromium chromium-driver')
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix='ugatit-chromium-')
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage', f'--user-data-dir={profile}', '--window-size=1280,900',
                 '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'):      # a test-pattern webcam
        options.add_argument(flag)
    options.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    # A driver path given: Selenium skips Selenium Manager, which would download a driver and a browser.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def element(driver, css: str = '', xpath: str = ''):
    """The first element matching ``css`` (or ``xpath``), once the page shows it."""
    by, selector = (By.XPATH, xpath) if xpath else (By.CSS_SELECTOR, css)
    return WebDriverWait(driver, TIMEOUT).until(lambda d: d.find_elements(by, selector))[0]


def status(driver) -> str:
    """The status line, once the event has written it; Gradio's own error display fails the test at once."""
    def written(d) -> str:
        gradio_errors = '#translation [data-testid="status-tracker"], [data-testid="toast-body"]'
        if any('Error' in e.text for e in d.find_elements(By.CSS_SELECTOR, gradio_errors)):
            pytest.fail('Gradio shows its own error instead of our status (app.py raised; see its log)')
        return d.find_element(By.ID, 'status').text.strip()
    return WebDriverWait(driver, TIMEOUT).until(written)


def submit(driver, url: str, photo: Path, direction: str = 'A2B', face_crop: bool = False) -> str:
    """Open the page, upload ``photo``, set the options, press Translate; the status shown."""
    driver.get(url)
    element(driver, '#photo input[type=file]').send_keys(str(photo))
    element(driver, '#photo img')                                                          # uploaded
    element(driver, xpath=f'//label[contains(., "{direction[0]} → {direction[-1]}")]').click()
    if face_crop:
        element(driver, '#face_crop input[type=checkbox]').click()
    element(driver, '#translate').click()
    return status(driver)


def shown_image(driver, elem_id: str) -> np.ndarray:
    """The image the page shows in ``#elem_id``, fetched by the page itself, as RGB uint8."""
    src = element(driver, f'#{elem_id} img').get_attribute('src')
    data = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {
            let s = ''; new Uint8Array(b).forEach(c => s += String.fromCharCode(c)); done(btoa(s)); });""", src)
    image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def expected_overlay(checkpoint: str, photo: Path) -> np.ndarray:
    """The issue's heatmap: the generator's CAM heatmap as ``utils.cam`` colours it (JET, min–max),
    half and half over the framed input, at the photo's size."""
    generators, arch = app.load_generators(checkpoint)
    img = load_image(str(photo))
    batch = Framing(arch['img_size'], keep_size=True).input(img)[None]
    with paddle.no_grad():
        heatmap = generators['genA2B'](paddle.to_tensor(batch))[2].numpy()[0]
    blend = (to_uint8_image(batch[0]).astype(np.float32) + cam(heatmap, arch['img_size'])) / 2
    return resize(np.round(blend).astype(np.uint8), *img.shape[:2]).astype(int)


def infer(argv: list[str], photo: Path, out: Path, *flags: str) -> np.ndarray:
    """``main.py --phase infer`` of one photo: its output image."""
    main.main(argv + ['--phase', 'infer', '--input', str(photo), '--output', str(out), *flags])
    return load_image(str(out / (photo.stem + '.png')))


def screenshot(driver, path: Path) -> None:
    driver.set_window_size(1280, driver.execute_script('return document.body.scrollHeight') + 20)
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)


def external_requests(driver) -> list[str]:
    """http(s) requests of the page to anywhere but this machine."""
    urls = [json.loads(e['message'])['message']['params'].get('request', {}).get('url', '')
            for e in driver.get_log('performance')]
    return [u for u in urls if u.startswith('http') and urlparse(u).hostname not in ('127.0.0.1', 'localhost')]


def scikit_photo(name: str, folder: Path) -> Path:
    """A photo bundled with scikit-image (the demo data's source), copied as PNG."""
    import skimage.data
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(skimage.data.__file__).parent / name, folder / name)
    return folder / name


@pytest.mark.slow
def test_page_shows_infers_translation_its_heatmap_and_the_time(app_url, browser, trained, tiny_data, tmp_path):
    """A demo test image, A → B: the whole photo, as --keep_size True; offline (no request leaves the machine)."""
    photo = Path(find_images(str(tiny_data / 'tiny' / 'testA'))[0])
    shown = submit(browser, app_url, photo)
    assert re.match(r'A → B in \d+ ms, 48×48', shown), shown
    screenshot(browser, tmp_path / 'app_translation.png')
    if os.environ.get('UGATIT_SAVE_SCREENSHOT'):
        shutil.copy(tmp_path / 'app_translation.png', os.environ['UGATIT_SAVE_SCREENSHOT'])
    expected = infer(trained[0], photo, tmp_path / 'infer', '--keep_size', 'True')
    np.testing.assert_array_equal(shown_image(browser, 'translation'), expected)
    overlay = shown_image(browser, 'heatmap').astype(int)
    assert np.abs(overlay - expected_overlay(trained[1], photo)).max() <= 1          # float rounding
    assert external_requests(browser) == []


@pytest.mark.slow
@pytest.mark.parametrize('name, direction, face_crop', [('chelsea.png', 'B2A', False), ('astronaut.png', 'A2B', True)])
def test_other_aspect_ratio_direction_and_face_crop_match_infer(app_url, browser, trained, tmp_path, name,
                                                                 direction, face_crop):
    """The cat (451×300), B → A, back at its aspect ratio; the astronaut's face, as --face_crop True."""
    photo = scikit_photo(name, tmp_path / 'in')
    shown = submit(browser, app_url, photo, direction, face_crop)
    flags = ['--face_crop', 'True'] if face_crop else ['--keep_size', 'True']
    expected = infer(trained[0], photo, tmp_path / 'infer', '--direction', direction, *flags)
    np.testing.assert_array_equal(shown_image(browser, 'translation'), expected)
    assert ('cropped to the face' in shown) == face_crop
    assert expected.shape[:2] == ((96, 96) if face_crop else (300, 451))


@pytest.mark.slow
def test_clicking_a_demo_test_image_translates_it(app_url, browser):
    browser.get(app_url)
    element(browser, xpath='//tr[contains(., "B → A")]').click()
    assert re.match(r'B → A in \d+ ms, 48×48', status(browser))
    assert browser.find_elements(By.CSS_SELECTOR, '#translation img')


@pytest.mark.slow
def test_a_webcam_photo_is_translated(app_url, browser):
    """Chromium's fake camera (a 1920×1440 test pattern, RGBA with an opaque alpha)."""
    browser.get(app_url)
    element(browser, '#photo button[aria-label="Capture from camera"]').click()
    element(browser, xpath='//*[@id="photo"]//button[contains(., "Access Webcam")]').click()
    element(browser, '#photo button[aria-label="capture photo"]').click()
    element(browser, '#photo img')
    element(browser, '#translate').click()
    assert re.fullmatch(r'A → B in \d+ ms, \d+×\d+; the encoder.s CAM classifier: P\(domain A\) = [01]\.\d\d',
                        status(browser))


@pytest.mark.slow
@pytest.mark.parametrize('case, message', [('text renamed .png', 'Not an image: notes.png is not a decodable image'),
                                           ('no face, face crop on', 'No face found in flat.png')])
def test_bad_input_gets_a_message_in_the_page(app_url, browser, tmp_path, case, message):
    if case == 'text renamed .png':
        photo = tmp_path / 'notes.png'
        photo.write_text('not an image\n')
    else:
        photo = tmp_path / 'flat.png'
        cv2.imwrite(str(photo), np.full((120, 160), 128, np.uint8))
    shown = submit(browser, app_url, photo, face_crop=case.startswith('no face'))
    screenshot(browser, tmp_path / 'app_bad_input.png')
    assert shown.startswith(message), shown
    assert not browser.find_elements(By.CSS_SELECTOR, '#translation img')
