"""U-GAT-IT in the browser: upload a photo (or take one with the webcam), see its translation and the
CAM heatmap of where the generator looked. A Gradio app; docs/app.md has the details.

    python main.py --demo && pip install -r requirements-app.txt
    python app.py                              # the newest checkpoint of --dataset demo in --result_dir results
    python app.py --checkpoint results/selfie2anime/model/selfie2anime_params_latest.pdparams --port 8060

The translation is ``main.py --phase infer --keep_size True`` (or ``--face_crop True``) pixel for pixel
(tests/test_app.py): the same reader (``dataset.load_image``), the same framing (``extras.deploy.Framing``)
and the same generator call. Only photos longer than ``MAX_SIDE`` are downscaled first, and the page says so.
"""
from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')      # read when gradio is imported: no calls home

import gradio as gr
import numpy as np
import paddle
from PIL import Image

from dataset import UnreadableImage, find_images, load_image, resize, to_uint8_image
from extras.checkpoints import CheckpointError, load_networks, loadable, read_checkpoint
from extras.deploy import Framing, NoFaceFound
from UGATIT import ARCH_ARGS, build_network
from utils import cam

log = logging.getLogger('ugatit')

MAX_SIDE = 2048                   # longer photos are downscaled first: the model sees img_size pixels anyway
HEIGHT = 320                      # of the image boxes, in CSS pixels
CSS = '#photo img, #translation img, #heatmap img {width: 100%; height: 100%; object-fit: contain}'   # small ones too
OLD_ARCH_DEFAULTS = {'arch': 'pytorch', 'smoothing': False}     # keys that checkpoints before --arch tf lack
GREY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')


# --------------------------------------------------------------------------- #
# The model
# --------------------------------------------------------------------------- #
def load_generators(path: str) -> tuple[dict, dict]:
    """({'genA2B', 'genB2A'} in eval mode, architecture) of a checkpoint this repository writes or
    converts; the architecture comes from the checkpoint. One-line ``CheckpointError`` otherwise."""
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint {path} does not exist: run python main.py --demo, or give --checkpoint')
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


def newest_checkpoint(result_dir: str, dataset: str) -> str:
    """The newest checkpoint of ``dataset`` that loads (a corrupt one falls back to the previous)."""
    model_dir = os.path.join(result_dir, dataset, 'model')
    for path, _ in loadable(model_dir, dataset):
        return path
    raise CheckpointError(f'no checkpoint in {model_dir}: run python main.py --demo first, or give --checkpoint')


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
    background = to_uint8_image(model_input)                              # S×S×C
    if background.shape[2] == 1:
        background = np.repeat(background, 3, axis=2)
    heat = cam(heatmap, background.shape[0])                              # S×S×3
    blended = ((background.astype(np.float32) + heat) / 2 + 0.5).astype(np.uint8)
    return resize(blended, height, width)


class Translator:
    """The two generators of one checkpoint and the page's one event, ``__call__``."""

    def __init__(self, path: str):
        self.path = path
        self.generators, self.arch = load_generators(path)

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
                   help='a checkpoint (.pdparams) written by main.py or convert.py; default: the newest of --dataset')
    p.add_argument('--dataset', default='demo', help='without --checkpoint: <result_dir>/<dataset>/model; '
                                                     'examples from <data_root>/<dataset>/testA and testB')
    p.add_argument('--result_dir', default='results', help='as main.py')
    p.add_argument('--data_root', default='dataset', help='as main.py')
    p.add_argument('--host', default=None, help='address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)')
    p.add_argument('--port', type=int, default=None, help='port (default: $GRADIO_SERVER_PORT, else 7860)')
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Load the model, then serve; a checkpoint that does not load is one line and exit status 1."""
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
    logging.getLogger('httpx').setLevel(logging.WARNING)               # Gradio's startup self-checks
    args = parse_args(argv)
    paddle.set_device('gpu' if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() else 'cpu')
    try:
        translator = Translator(args.checkpoint or newest_checkpoint(args.result_dir, args.dataset))
    except CheckpointError as e:
        raise SystemExit(f'error: {e}') from None
    log.info('serving %s', translator.describe().replace('`', ''))
    examples = example_photos(args.data_root, args.dataset)
    demo = build_demo(translator, examples)
    demo.queue(default_concurrency_limit=1, max_size=32)                # one translation at a time, the rest wait
    demo.launch(server_name=args.host, server_port=args.port, max_file_size='50mb', css=CSS,
                allowed_paths=sorted({os.path.dirname(row[0]) for row in examples}))


if __name__ == '__main__':
    main()
