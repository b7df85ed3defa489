"""The web app of ``python app.py``: upload a photo (or take one with the webcam), see its translation and
the CAM heatmap of where the generator looked. A Gradio app; docs/app.md has the details.

    python main.py --demo && pip install -r requirements-app.txt
    python app.py                              # the newest checkpoint of --dataset demo in --result_dir results
    python app.py --checkpoint results/selfie2anime/model/selfie2anime_params_latest.pdparams --port 8060

The translation is ``main.py --phase infer --keep_size True`` (or ``--face_crop True``) pixel for pixel
(tests/test_app.py): the same reader (``dataset.load_image``), the same framing (``extras.deploy.Framing``)
and the same generator call. Only photos longer than ``MAX_SIDE`` are downscaled first, and the page says so.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import socket
import time
import warnings
import zipfile

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')      # read when gradio is imported: no calls home
warnings.filterwarnings('ignore', message='No ccache found')   # Paddle's import-time note for C++ extension builders

import gradio as gr
import numpy as np
import paddle
from PIL import Image

from dataset import UnreadableImage, find_images, load_image, resize
from extras.checkpoints import CHECKPOINT_FILE, CheckpointError, load_networks, loadable, read_checkpoint
from extras.convert import OFFICIAL_NAME
from extras.deploy import Framing, NoFaceFound
from extras.tf_checkpoint import MODEL_DIR, TF_FILE, TFCheckpointError, find_checkpoint as find_tf_checkpoint, prefix_step
from UGATIT import ARCH_ARGS, build_network
from utils import cam, to_rgb_tile

log = logging.getLogger('ugatit')

MAX_SIDE = 2048                   # longer photos are downscaled first: the model sees img_size pixels anyway
HEIGHT = 320                      # of the image boxes, in CSS pixels
CSS = '#photo img, #translation img, #heatmap img {width: 100%; height: 100%; object-fit: contain}'   # small ones too
OLD_ARCH_DEFAULTS = {'arch': 'pytorch', 'smoothing': False}     # keys that checkpoints before --arch tf lack
GREY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')
TORCH_MAGIC = b'\x8a\x0a' + 0x1950a86a20f9469cfc6c.to_bytes(10, 'little')       # a legacy torch.save file's first value
USE_OURS = 'pass a .pdparams file that main.py or convert.py wrote'


# --------------------------------------------------------------------------- #
# The model
# --------------------------------------------------------------------------- #
def load_generators(path: str, state: dict | None = None) -> tuple[dict, dict]:
    """({'genA2B', 'genB2A'} in eval mode, architecture) of a checkpoint this repository writes or
    converts (``state``: its contents, when already read); the architecture comes from the checkpoint.
    One-line ``CheckpointError`` otherwise."""
    if state is None:
        problem = not_a_checkpoint(path)
        if problem:
            raise CheckpointError(problem)
        state = read_checkpoint(path)
    arch = {**OLD_ARCH_DEFAULTS, **(state.get('arch') or {})}
    missing = [k for k in ARCH_ARGS if k not in arch]
    if missing:
        raise CheckpointError(f'{path} does not record its architecture ({", ".join(missing)}): not a checkpoint '
                              f'of this repository')
    generators = {}
    for name in ('genA2B', 'genB2A'):
        generators[name] = build_network(name, arch)
        load_networks(path, state, {name: generators[name]})          # keys and shapes checked, one-line errors
        del state[name]                                               # the full model's is 1.1 GB
        generators[name].eval()
    return generators, arch


def not_a_checkpoint(path: str) -> str | None:
    """Why ``path`` is not a checkpoint of this repository and what to pass instead, told from its name
    and first bytes (a multi-GB file is not read); None when it may be one (``.pdparams`` or a pickle)."""
    tf = 'the authors\' TensorFlow checkpoint, not one of this repository'
    if not os.path.exists(path):
        if os.path.isfile(path + '.index'):
            return f'{path} is the prefix of {tf}: {convert_tf(path)}'
        return f'checkpoint {path} does not exist: {USE_OURS}, or run python main.py --demo'
    if os.path.isdir(path):
        return f'{path} is a folder: pass a checkpoint file in it'
    name = os.path.basename(path)
    if name.endswith('.pdparams.json'):
        return f'{path} is the JSON sidecar of the checkpoint {path[:-len(".json")]}: pass that file'
    try:
        with open(path, 'rb') as f:
            head = f.read(32)
    except OSError:
        return None                                                   # read_checkpoint says why
    if TF_FILE.search(name) or head.startswith(b'model_checkpoint_path'):
        return f'{path} is a file of {tf}: {convert_tf(path)}'
    torch = TORCH_MAGIC in head or (head.startswith(b'PK\x03\x04') and _holds_torch_or_numpy(path))
    if not torch and (head.startswith(b'\x80') or name.endswith('.pdparams')):      # a pickle: paddle.load decides
        return None
    if torch or name.endswith(('.pt', '.pth', '.npz')):
        official = OFFICIAL_NAME.fullmatch(name)
        return (f'{path} holds PyTorch weights, not a checkpoint of this repository: '
                + convert_first(path, official and official.group(1), bool(official) and official.group(2) != 'latest'))
    try:
        with Image.open(path) as image:
            return f'{path} is an image ({image.format}), not a checkpoint: {USE_OURS}; upload photos in the page'
    except (OSError, ValueError, Image.DecompressionBombError):
        return f'{path} is not a checkpoint of this repository (nor TensorFlow or PyTorch weights): {USE_OURS}'


def _holds_torch_or_numpy(path: str) -> bool:
    """Whether a zip file is a torch.save file (its data.pkl) or an .npz (.npy files)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith('data.pkl') for n in names) or bool(names) and all(n.endswith('.npy') for n in names)


def convert_tf(path: str) -> str:
    """What to do with the authors' TensorFlow checkpoint at ``path`` (a folder, its prefix or one of its
    files): convert.py's command, or why it cannot convert."""
    try:
        prefix = find_tf_checkpoint(path)
    except TFCheckpointError as e:
        return str(e)
    model_dir = MODEL_DIR.match(os.path.basename(os.path.dirname(prefix)))
    return convert_first(prefix, model_dir and model_dir['dataset'], prefix_step(prefix) is not None)


def convert_first(src: str, dataset: str | None, step_in_name: bool) -> str:
    """The commands that convert official weights ``src`` and serve them."""
    d = shlex.quote(dataset) if dataset else '<dataset>'
    step = '' if step_in_name else ' --step <step>'
    return (f'convert it first: python convert.py --src {shlex.quote(src)} --dst results/{d}/model --dataset {d}{step} '
            f'--generators_only True, then python app.py --dataset {d}')


def find_checkpoint(checkpoint: str | None, result_dir: str, dataset: str) -> tuple[str, dict | None]:
    """(the file to serve, its contents when finding it read them): ``checkpoint``, the newest one that
    loads in it when it is a folder, or without it the newest of ``dataset``."""
    if checkpoint is None:
        return newest_checkpoint(result_dir, dataset)
    return newest_in_folder(checkpoint, dataset) if os.path.isdir(checkpoint) else (checkpoint, None)


def newest_checkpoint(result_dir: str, dataset: str) -> tuple[str, dict]:
    """(path, contents) of the newest checkpoint of ``dataset`` that loads (a corrupt one falls back to
    the previous)."""
    model_dir = os.path.join(result_dir, dataset, 'model')
    for found in loadable(model_dir, dataset):
        return found
    raise CheckpointError(f'no checkpoint in {model_dir}: run python main.py --demo first, or give --checkpoint')


def newest_in_folder(folder: str, dataset: str) -> tuple[str, dict]:
    """(path, contents) of the newest checkpoint that loads in ``folder`` or its ``model`` subfolder (of ``dataset`` when they
    hold several datasets'), logged; a one-line ``CheckpointError`` when there is none."""
    for model_dir in (folder, os.path.join(folder, 'model')):
        found = sorted({m.group(1) for name in _listdir(model_dir) if (m := CHECKPOINT_FILE.match(name))})
        if len(found) > 1 and dataset not in found:
            raise CheckpointError(f'{model_dir} holds checkpoints of {", ".join(found)}: pass --dataset with one of '
                                  f'them, or a checkpoint file')
        if found:
            path, state = next(loadable(model_dir, dataset if dataset in found else found[0]))
            log.info('%s is a folder: serving its newest checkpoint that loads, %s', folder, path)
            return path, state
    try:
        find_tf_checkpoint(folder)
    except TFCheckpointError:
        raise CheckpointError(f'{folder} is a folder without checkpoints of this repository: {USE_OURS}') from None
    raise CheckpointError(f'{folder} holds the authors\' TensorFlow checkpoint, not one of this repository: '
                          + convert_tf(folder))


def _listdir(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def read_photo(path: str, channels: int) -> tuple[np.ndarray, list[str]]:
    """The photo as ``main.py --phase infer`` reads it (``UnreadableImage`` if it is not an image),
    downscaled to ``MAX_SIDE``, and what was done to it, for the page."""
    img = load_image(path, channels)
    notes = _format_notes(path, channels)
    h, w = img.shape[:2]
    if max(h, w) > MAX_SIDE:
        scale = MAX_SIDE / max(h, w)
        img = resize(img, max(1, round(h * scale)), max(1, round(w * scale)))
        notes.append(f'downscaled from {w}×{h} to {img.shape[1]}×{img.shape[0]}')
    return img, notes


def _format_notes(path: str, channels: int) -> list[str]:
    """What ``load_image`` silently converts, read from the header alone."""
    try:
        with Image.open(path) as header:
            mode, rotated = header.mode, header.getexif().get(0x0112, 1) != 1
            transparent = ('transparency' in header.info or 'A' in header.getbands()
                           and header.getchannel('A').getextrema()[0] < 255)     # not a webcam's opaque alpha
    except (OSError, ValueError, Image.DecompressionBombError):      # formats PIL lacks: OpenCV decoded it
        return []
    notes = ['grey image: converted to RGB'] if mode in GREY_MODES and channels == 3 else []
    if transparent:
        notes.append('transparency dropped')
    if mode == 'CMYK':
        notes.append('CMYK converted to RGB')
    if rotated:
        notes.append('its EXIF rotation is ignored, as by main.py --phase infer')
    return notes


def heatmap_overlay(model_input: np.ndarray, heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """The CAM heatmap (JET, min–max normalised as ``utils.cam``) blended half and half over the
    model's input, at the size of the shown translation."""
    background = to_rgb_tile(model_input)                                 # S×S×3
    heat = cam(heatmap, background.shape[0])                              # S×S×3
    blended = ((background.astype(np.float32) + heat) / 2 + 0.5).astype(np.uint8)
    return resize(blended, height, width)


class Translator:
    """The two generators of one checkpoint and the page's one event, ``__call__``."""

    def __init__(self, path: str, state: dict | None = None):
        self.path = path
        self.generators, self.arch = load_generators(path, state)

    def describe(self) -> str:
        a = self.arch
        kind = ('light' if a['light'] else 'full') + (' (the authors\' TF architecture)' if a['arch'] == 'tf' else '')
        return (f'`{os.path.basename(self.path)}`: {kind} model, {a["img_size"]} px, ch {a["ch"]}, '
                f'on {paddle.get_device()}')

    def __call__(self, photo: dict | str | None, direction: str,
                 face_crop: bool = False) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """(translation, heatmap overlay, status in Markdown); bad input gets only the status.

        ``photo``: the photo box's file payload as Gradio sends it, unprocessed (``preprocess=False``:
        Gradio's own preprocessing opens the file with PIL first, so a file that is not an image would
        end in Gradio's bare "Error", and a grey photo would be re-encoded), or a path.
        """
        started = time.perf_counter()
        path = photo.get('path') if isinstance(photo, dict) else photo
        if not path:
            return None, None, 'Upload a photo or take one with the webcam, then press **Translate**.'
        name = (photo.get('orig_name') if isinstance(photo, dict) else None) or os.path.basename(path)
        try:
            img, notes = read_photo(path, self.arch['img_ch'])
            framing = Framing(self.arch['img_size'], keep_size=True, face_crop=face_crop)
            batch = framing.input(img)[None]                              # [1, C, S, S] in [-1, 1]
        except UnreadableImage as e:
            reason = str(e).replace(path, name)                           # not the server's cache path
            return None, None, f'**Not an image**: {reason}. Upload a JPEG, PNG, WebP or BMP photo.'
        except NoFaceFound:
            return None, None, f'**No face found** in {name}: untick *Face crop* to translate the whole photo.'
        with paddle.no_grad():                    # as extras.deploy.eager_translator, keeping the CAM outputs
            out, cam_logit, heatmap = self.generators[f'gen{direction}'](paddle.to_tensor(batch))
        translation = framing.output(out.numpy()[0], img.shape)
        h, w = translation.shape[:2]
        overlay = None if heatmap is None else heatmap_overlay(batch[0], heatmap.numpy()[0], h, w)
        if face_crop:
            notes.insert(0, 'cropped to the face')
        if cam_logit is not None:
            source = direction[0]                 # the generator's classifier tells its source domain from the other
            p_source = float(paddle.nn.functional.sigmoid(cam_logit).mean())
            notes.append(f'the encoder\'s CAM classifier: P(domain {source}) = {p_source:.2f}')
        elapsed = (time.perf_counter() - started) * 1000
        status = '; '.join([f'**{direction[0]} → {direction[-1]}** in {elapsed:.0f} ms, {w}×{h}'] + notes)
        return _shown(translation), overlay, status


def _shown(image: np.ndarray) -> np.ndarray:
    """H×W×1 grey → H×W, which Gradio shows."""
    return image[:, :, 0] if image.shape[2] == 1 else image


# --------------------------------------------------------------------------- #
# The page
# --------------------------------------------------------------------------- #
def example_photos(data_root: str, dataset: str, per_domain: int = 3) -> list[list]:
    """[photo, direction] rows: the first test images of each domain."""
    rows = []
    for domain, direction in (('testA', 'A2B'), ('testB', 'B2A')):
        folder = os.path.join(data_root, dataset, domain)
        rows += [[path, direction] for path in (find_images(folder) if os.path.isdir(folder) else [])[:per_domain]]
    return rows


def build_demo(translator: Translator, examples: list[list]) -> gr.Blocks:
    """The page: photo, direction and face crop in; translation, heatmap overlay and status out."""
    with gr.Blocks(title='U-GAT-IT') as demo:
        gr.Markdown(f'## U-GAT-IT: photo translation and where the model looked\n{translator.describe()}')
        with gr.Row():
            with gr.Column() as left:
                photo = gr.Image(label='Photo', type='filepath', sources=['upload', 'webcam'], height=HEIGHT,
                                 elem_id='photo')
                direction = gr.Radio([('A → B', 'A2B'), ('B → A', 'B2A')], value='A2B', label='Direction')
                face_crop = gr.Checkbox(label='Face crop', elem_id='face_crop',
                                        info='translate the square around the largest face, as --face_crop True')
                button = gr.Button('Translate', variant='primary', elem_id='translate')
            with gr.Column():
                translation = gr.Image(label='Translation', format='png', height=HEIGHT, interactive=False,
                                       elem_id='translation')                   # PNG: the pixels as computed
                overlay = gr.Image(label='Where the generator looked: its CAM heatmap (red: most) over its input',
                                   format='png', height=HEIGHT, interactive=False, elem_id='heatmap')
                status = gr.Markdown(elem_id='status')
        inputs, outputs = [photo, direction, face_crop], [translation, overlay, status]
        # preprocess=False: the photo arrives as Gradio's file payload (see Translator.__call__); Gradio has
        # still checked that the file is one uploaded to it.
        button.click(translator, inputs, outputs, api_name='translate', preprocess=False)
        if examples:
            with left:                                                     # under the button
                gr.Examples(examples, inputs[:2], outputs, fn=translator, cache_examples=False, run_on_click=True,
                            preprocess=False, label='Demo test images: click one to translate it')
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description='U-GAT-IT web app (Gradio)', allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--checkpoint', default=None,
                   help='a checkpoint (.pdparams) written by main.py or convert.py, or a folder of them (its newest); '
                        'default: the newest of --dataset')
    p.add_argument('--dataset', default='demo', help='without --checkpoint: <result_dir>/<dataset>/model; '
                                                     'examples from <data_root>/<dataset>/testA and testB')
    p.add_argument('--result_dir', default='results', help='as main.py')
    p.add_argument('--data_root', default='dataset', help='as main.py')
    p.add_argument('--host', default=None, help='address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)')
    p.add_argument('--port', type=int, default=None, help='port (default: $GRADIO_SERVER_PORT, else 7860)')
    return p.parse_args(argv)


def port_problem(host: str, port: int) -> str | None:
    """Why Gradio could not listen on ``host``:``port``, found by binding it as Gradio does (SO_REUSEADDR:
    a port that just closed is free); None when it can."""
    if not 1 <= port <= 65535:
        return f'--port {port} is not a valid port (1-65535)'
    try:
        family, _, _, _, address = socket.getaddrinfo(host.strip('[]'), port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return f'port {port} on {host} is in use: pass another --port'
        return f'cannot listen on {host} port {port} ({e.strerror or e}): pass another --host or --port'
    return None


def main(argv: list[str] | None = None) -> None:
    """Check the port, load the model, then serve; a port that is taken or a checkpoint that does not load
    is one line and exit status 1."""
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
    logging.getLogger('httpx').setLevel(logging.WARNING)               # Gradio's startup self-checks
    args = parse_args(argv)
    host = args.host or os.environ.get('GRADIO_SERVER_NAME', '127.0.0.1')
    problem = None if args.port is None else port_problem(host, args.port)      # else Gradio finds a free one
    if problem:
        raise SystemExit(f'error: {problem}')
    paddle.set_device('gpu' if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() else 'cpu')
    try:
        translator = Translator(*find_checkpoint(args.checkpoint, args.result_dir, args.dataset))
    except CheckpointError as e:
        raise SystemExit(f'error: {e}') from None
    log.info('serving %s', translator.describe().replace('`', ''))
    examples = example_photos(args.data_root, args.dataset)
    demo = build_demo(translator, examples)
    demo.queue(default_concurrency_limit=1, max_size=32)                # one translation at a time, the rest wait
    try:
        demo.launch(server_name=args.host, server_port=args.port, max_file_size='50mb', css=CSS,
                    allowed_paths=sorted({os.path.dirname(row[0]) for row in examples}))
    except OSError as e:                                 # the port taken since port_problem, or none free
        reason = ' '.join(str(e).split()).split('. ')[0]     # Gradio's advice is for launch()'s caller
        raise SystemExit(f'error: Gradio cannot serve on {host} ({reason})'
                         + (': pass another --port' if 'port' in reason else '')) from None


if __name__ == '__main__':
    main()
