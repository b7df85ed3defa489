"""The eval phase and reproduction reports: KID/FID of the test translations beside the paper's
Table 3, and the ablation table (Table 1) assembled from several runs.

``python main.py --phase eval --dataset selfie2anime`` translates the test sets (unless test/ holds
the translations of exactly the weights and test images evaluated now), then measures, per direction,

    A2B: KID(real testB, translated testA)        B2A: KID(real testA, translated testB)

and FID, and writes ``results/<dataset>/metrics.json``, ``report.md`` and ``report_samples.png``. KID
follows extras/metrics.py: by default the block estimator of the author's metric script
(max_block_size 10, "±" a standard error), ×100 as in the paper.

What earlier course ports called "mean_KID" (taki0112/GAN_Metrics-Tensorflow's
``mean_kernel_inception_distance``) is ((0.02·KID(target, fake) + 0.98·KID(source, fake)) / 2)×100:
mostly a distance to the *source* domain. Which of the two the paper reports is not known; the blended
one is reported separately, labelled, beside the KID to the target domain.
"""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from dataset import ImageFolder, output_stem, resize, load_image, write_image
from extras import metrics
from extras.checkpoints import newest, weights_id
from extras.inception import load_inception

log = logging.getLogger('ugatit')

PAPER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'paper_results.json')
DIRECTIONS = {'A2B': ('testA', 'testB'), 'B2A': ('testB', 'testA')}       # direction: (source, target)


def paper_results() -> dict:
    with open(PAPER_FILE) as f:
        return json.load(f)


def paper_kid(dataset: str) -> dict:
    """The paper's U-GAT-IT KID×100 (mean, std) for each direction of ``dataset``, or {} if not in Table 3."""
    paper = paper_results()
    names = paper['datasets'].get(dataset)
    if not names:
        return {}
    return {direction: {'row': name, 'kid_x100': paper['table3'][name]['U-GAT-IT'][0],
                        'kid_std_x100': paper['table3'][name]['U-GAT-IT'][1]}
            for direction, name in zip(DIRECTIONS, names)}


def course_mean_kid(kid_target: float, kid_source: float, alpha: float = 0.98) -> float:
    """GAN_Metrics-Tensorflow's mean_KID: ((1−α)·KID(target, fake) + α·KID(source, fake)) / 2."""
    return ((1 - alpha) * kid_target + alpha * kid_source) / 2


def variant_name(norm: str, cam_g: bool, cam_d: bool, self_attn: str) -> str:
    """The row of the paper's Table 1 (ablation) a configuration reproduces: 'U-GAT-IT', 'w/ IN',
    'w/ LN', 'w/ AdaIN', 'w/ GN', 'w/o CAM', 'w/o G_CAM', 'w/o D_CAM'; other combinations and
    self-attention get a descriptive name that no paper row has."""
    parts = [] if norm == 'adalin' else [{'in': 'w/ IN', 'ln': 'w/ LN', 'adain': 'w/ AdaIN', 'gn': 'w/ GN'}[norm]]
    if not (cam_g and cam_d):
        parts.append('w/o CAM' if not (cam_g or cam_d) else 'w/o G_CAM' if not cam_g else 'w/o D_CAM')
    if self_attn != 'none':
        parts.append(f'+ self-attention ({ {"g": "G", "d": "D", "gd": "G and D"}[self_attn] })')
    return ' '.join(parts) or 'U-GAT-IT'


def describe(arch: dict) -> str:
    """'U-GAT-IT light, ch 64, n_res 4, 256 px' (plus the variant and the TF architecture)."""
    text = f'U-GAT-IT {"light" if arch["light"] else "full"}, ch {arch["ch"]}, n_res {arch["n_res"]}, {arch["img_size"]} px'
    variant = variant_name(arch['norm'], arch['cam_g'], arch['cam_d'], arch['self_attn'])
    return text + ('' if variant == 'U-GAT-IT' else f', {variant}') + (', TF architecture' if arch.get('arch') == 'tf' else '')


# --------------------------------------------------------------------------- #
# The eval phase
# --------------------------------------------------------------------------- #
def translations_current(test_dir: str, model_dir: str, dataset: str, data: str, arch: dict) -> bool:
    """Whether test/ holds the translations of the weights test would load now (the newest
    checkpoint, by its content, not its name) for exactly the images of the current test sets."""
    try:
        with open(os.path.join(test_dir, 'info.json')) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    path = newest(model_dir, dataset)
    if path is None or info.get('weights') != weights_id(path) or info.get('arch') != arch:
        return False
    for direction, (source, _) in DIRECTIONS.items():
        folder = os.path.join(data, source)
        wanted = {output_stem(p, folder) for p in ImageFolder(folder, 8).paths}
        have = {os.path.splitext(n)[0] for n in os.listdir(os.path.join(test_dir, direction))}
        if wanted != have:
            return False
    return True


def evaluate(data: str, test_dir: str, estimator: str = 'block', weights: str | None = None,
             progress: bool = True) -> dict:
    """KID×100 ± std×100 and FID of both directions (plus the course mean_KID), from the test sets
    in ``data`` and their translations in ``test_dir``."""
    model = load_inception(weights)
    started = time.time()
    folders = {'testA': os.path.join(data, 'testA'), 'testB': os.path.join(data, 'testB'),
               'A2B': os.path.join(test_dir, 'A2B'), 'B2A': os.path.join(test_dir, 'B2A')}
    feats = {name: metrics.folder_features(path, model, progress=progress) for name, path in folders.items()}
    result = {}
    for direction, (source, target) in DIRECTIONS.items():
        result[direction] = metrics.compare(feats[target], feats[direction], estimator)
        to_source = metrics.kid(feats[source], feats[direction], estimator)[0]
        result[direction]['course_mean_kid_x100'] = 100 * course_mean_kid(result[direction]['kid_x100'] / 100, to_source)
    result['protocol'] = {**metrics.describe_protocol(estimator),
                          'pairs': {'A2B': 'real testB vs testA translated A→B', 'B2A': 'real testA vs testB translated B→A'},
                          'inception_weights': model.weights_file, 'inception_sha1': model.weights_sha1,
                          'feature_seconds': round(time.time() - started, 1),
                          'images': {name: len(f) for name, f in feats.items()}}
    return result


def run_eval(gan, args) -> str:
    """--phase eval: translate the test sets if needed, then write metrics.json, report.md and
    report_samples.png; returns the report's path."""
    data = os.path.join(args.data_root, args.dataset)
    if not translations_current(gan.test_dir, gan.model_dir, args.dataset, data, gan.arch()):
        gan.test()
    with open(os.path.join(gan.test_dir, 'info.json')) as f:
        info = json.load(f)
    result = evaluate(data, gan.test_dir, args.kid_estimator, args.inception_weights, progress=False)
    extra = {}
    if os.path.exists(os.path.join(data, 'build_info.json')):          # the demo: a known ground truth
        from extras.demo_data import demo_errors
        extra['demo_error'] = demo_errors(gan.test_dir, data)
    write_image(os.path.join(gan.out_dir, 'report_samples.png'), sample_strip(data, gan.test_dir))
    arch = info['arch']
    run = {'checkpoint': info['checkpoint'], 'step': info['step'], 'model': describe(arch), 'arch': arch,
           'variant': variant_name(arch['norm'], arch['cam_g'], arch['cam_d'], arch['self_attn'])}
    path = write_report(gan.out_dir, args.dataset, result, run, extra)
    for direction in DIRECTIONS:
        r = result[direction]
        log.info('%s: KID×100 %.2f ± %s, FID %.2f (%d real / %d translated)', direction, r['kid_x100'],
                 'n/a' if r['kid_std_x100'] is None else f'{r["kid_std_x100"]:.2f}', r['fid'], r['n_real'], r['n_fake'])
    log.info('report: %s', path)
    return path


def sample_strip(data: str, test_dir: str, n: int = 5, size: int = 128) -> np.ndarray:
    """Two rows per direction (inputs, translations) of the first n test images, RGB uint8."""
    rows = []
    for direction, (source, _) in DIRECTIONS.items():
        folder = os.path.join(data, source)
        inputs = ImageFolder(folder, size).paths[:n]
        translations = [os.path.join(test_dir, direction, output_stem(p, folder) + '.png') for p in inputs]
        for paths in (inputs, translations):
            rows.append(np.concatenate([resize(load_image(p), size) for p in paths], axis=1))
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)


def _fmt(value, digits=2) -> str:
    return '—' if value is None else f'{value:.{digits}f}'


def write_report(out_dir: str, dataset: str, result: dict, run: dict, extra: dict | None = None) -> str:
    """metrics.json and report.md in ``out_dir``; returns the report path."""
    paper = paper_kid(dataset)
    record = {'dataset': dataset, **run, **result, 'paper': paper or None, **(extra or {})}
    with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
        json.dump(record, f, indent=1, default=float)
    lines = [f'# U-GAT-IT reproduction report: `{dataset}`', '',
             f'Checkpoint `{run["checkpoint"]}` (step {run["step"]}), {run["model"]}.', '',
             '| direction | ours KID×100 | paper KID×100 (U-GAT-IT, Table 3) | ours FID | images (real / translated) |',
             '|---|---|---|---|---|']
    for direction in DIRECTIONS:
        r, p = result[direction], paper.get(direction)
        paper_cell = f'{p["kid_x100"]:.2f} ± {p["kid_std_x100"]:.2f} ({p["row"]})' if p else 'not in the paper'
        lines.append(f'| {direction} | {_fmt(r["kid_x100"])} ± {_fmt(r["kid_std_x100"])} | {paper_cell} | '
                     f'{_fmt(r["fid"])} | {r["n_real"]} / {r["n_fake"]} |')
    protocol = result['protocol']
    lines += ['', '## Protocol', '',
              f'- KID: {protocol["kid"]}; estimator `{protocol["estimator"]}`'
              + (f', max_block_size {protocol["max_block_size"]}' if protocol['max_block_size'] else '')
              + f'; ± is the {protocol["kid_std"]}.',
              f'- Pairs: A2B = {protocol["pairs"]["A2B"]}; B2A = {protocol["pairs"]["B2A"]}.',
              f'- FID: {protocol["fid"]}.',
              f'- Features: {protocol["features"]}, weights `{protocol["inception_weights"]}` '
              f'(SHA-1 `{protocol["inception_sha1"]}`).',
              f'- Preprocessing: {protocol["preprocessing"]}.',
              f'- Images: {protocol["images"]}; feature extraction {protocol["feature_seconds"]} s.',
              '', '## The blended "mean_KID" of the author\'s script', '',
              'GAN_Metrics-Tensorflow\'s `mean_KID` = ((0.02·KID(target, fake) + 0.98·KID(source, fake)) / 2)×100 '
              'mostly measures the distance to the *source* domain; for the authors\' model it is the number close '
              'to Table 3, and many course ports report it. Which of the two the paper reports is not known. '
              f'A2B {_fmt(result["A2B"]["course_mean_kid_x100"])}, '
              f'B2A {_fmt(result["B2A"]["course_mean_kid_x100"])}.']
    if extra and 'demo_error' in extra:
        e = extra['demo_error']
        lines += ['', '## Demo ground truth', '',
                  'The demo\'s domain B is a known filter of domain A, so each translation has a ground truth: '
                  'mean |pixel| error in [0, 1].', '', '| direction | translation | identity baseline |', '|---|---|---|',
                  f'| A2B | {e["trained"]:.4f} | {e["identity_baseline"]:.4f} |',
                  f'| B2A | {e["B2A"]:.4f} | {e["identity_baseline"]:.4f} |']
    lines += ['', '## Samples', '', 'Rows: testA, its A→B translation, testB, its B→A translation.', '',
              '![samples](report_samples.png)', '']
    path = os.path.join(out_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


# --------------------------------------------------------------------------- #
# Ablation: several runs beside the paper's Table 1
# --------------------------------------------------------------------------- #
def find_metrics(run: str, dataset: str) -> str:
    """The metrics.json of a run given as its folder, its result_dir, or the file itself."""
    for path in (run, os.path.join(run, 'metrics.json'), os.path.join(run, dataset, 'metrics.json')):
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f'no metrics.json in {run} (nor in {os.path.join(run, dataset)}): '
                            f'run python main.py --phase eval for that run first')


def ablation_table(dataset: str, runs: list[str]) -> str:
    """A markdown table: each run's KID×100 ± std×100 per direction beside the paper's Table 1 row
    of the same variant (the paper's ablation is on selfie2anime only)."""
    rows = paper_results()['table1_ablation']['rows'] if dataset == 'selfie2anime' else {}
    lines = [f'# Ablation on `{dataset}` (KID×100 ± std×100, lower is better)', '',
             '| variant | run | ours A2B | ours B2A | paper A2B | paper B2A |', '|---|---|---|---|---|---|']
    for run in runs:
        with open(find_metrics(run, dataset)) as f:
            record = json.load(f)
        variant = record.get('variant', 'U-GAT-IT')
        ours = [f'{_fmt(record[d]["kid_x100"])} ± {_fmt(record[d]["kid_std_x100"])}' for d in DIRECTIONS]
        theirs = [f'{m:.2f} ± {s:.2f}' for m, s in rows[variant]] if variant in rows else ['—', '—']
        lines.append(f'| {variant} | `{run}` (step {record.get("step")}) | {ours[0]} | {ours[1]} | '
                     f'{theirs[0]} | {theirs[1]} |')
    lines += ['', 'Paper: Kim et al. 2020, Table 1 (selfie2anime / anime2selfie). Ours: `--phase eval` of each run, '
              'with the protocol in its report.md.']
    return '\n'.join(lines) + '\n'
