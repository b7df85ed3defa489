"""Reproduction reports: the eval phase's KID/FID beside the paper's Table 3, and the ablation
table (Table 1) assembled from several runs.

``python main.py --phase eval --dataset selfie2anime`` translates the test sets (if the newest
checkpoint's translations are not there yet), then measures, for each direction,

    A2B: KID(real testB, translated testA)        B2A: KID(real testA, translated testB)

and FID, and writes ``results/<dataset>/metrics.json`` and ``results/<dataset>/report.md`` (with
``report_samples.png``). KID follows metrics.kid: by default the block estimator of the author's
metric script (max_block_size 10, "±" a standard error), reported ×100 as in the paper.

What earlier course ports called "mean_KID" (taki0112/GAN_Metrics-Tensorflow's
``mean_kernel_inception_distance``) is ((0.02·KID(target, fake) + 0.98·KID(source, fake)) / 2)×100:
mostly a distance to the *source* domain. It is reported separately, labelled, never as KID.
"""
from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np

import metrics

PAPER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'paper_results.json')


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
            for direction, name in zip(('A2B', 'B2A'), names)}


def course_mean_kid(kid_target: float, kid_source: float, alpha: float = 0.98) -> float:
    """GAN_Metrics-Tensorflow's mean_KID: ((1−α)·KID(target, fake) + α·KID(source, fake)) / 2."""
    return ((1 - alpha) * kid_target + alpha * kid_source) / 2


def _kid_entry(real: np.ndarray, fake: np.ndarray, estimator: str, max_block_size: int) -> dict:
    mean, std = metrics.kid(real, fake, estimator=estimator, max_block_size=max_block_size)
    return {'kid_x100': 100 * mean, 'kid_std_x100': None if np.isnan(std) else 100 * std,
            'fid': metrics.fid(real, fake), 'n_real': len(real), 'n_fake': len(fake)}


def evaluate(real_A: str, real_B: str, fake_A2B: str, fake_B2A: str, estimator: str = 'block',
             max_block_size: int = 10, weights: str | None = None, batch_size: int = 50,
             progress: bool = True) -> dict:
    """KID×100 ± std×100 and FID of both directions from four image folders (plus the course mean_KID)."""
    model = metrics.load_inception(weights)
    started = time.time()
    feats = {name: metrics.folder_features(path, model, batch_size, progress=progress)
             for name, path in (('real_A', real_A), ('real_B', real_B), ('fake_A2B', fake_A2B), ('fake_B2A', fake_B2A))}
    seconds = time.time() - started
    result = {'A2B': _kid_entry(feats['real_B'], feats['fake_A2B'], estimator, max_block_size),
              'B2A': _kid_entry(feats['real_A'], feats['fake_B2A'], estimator, max_block_size)}
    for direction, source, fake in (('A2B', 'real_A', 'fake_A2B'), ('B2A', 'real_B', 'fake_B2A')):
        to_source = metrics.kid(feats[source], feats[fake], estimator=estimator, max_block_size=max_block_size)[0]
        result[direction]['course_mean_kid_x100'] = 100 * course_mean_kid(result[direction]['kid_x100'] / 100,
                                                                          to_source)
    weights_path = weights or metrics.find_fid_helper_weights()
    result['protocol'] = {
        'estimator': estimator, 'max_block_size': max_block_size if estimator == 'block' else None,
        'kid': 'unbiased MMD² with k(x,y) = (xᵀy/2048 + 1)³, float64; ×100',
        'kid_std': 'standard error of the block mean (TF-GAN)' if estimator == 'block'
                   else 'std (ddof 0) of 100 subset estimates (torch-fidelity)',
        'fid': 'Fréchet distance, unbiased covariances, scipy sqrtm',
        'pairs': {'A2B': 'real testB vs testA translated A→B', 'B2A': 'real testA vs testB translated B→A'},
        'preprocessing': 'uint8 RGB → PIL bilinear resize to 299×299 → x/127.5 − 1 (the author\'s metric script)',
        'features': 'FID Inception-v3 (TF 2015-12-05 graph) pool_3, 2048-d',
        'inception_weights': os.path.basename(weights_path) if weights_path else None,
        'inception_sha1': metrics._sha1(weights_path) if weights_path and os.path.exists(weights_path) else None,
        'feature_seconds': round(seconds, 1),
        'images': {name: len(f) for name, f in feats.items()},
    }
    return result


def sample_strip(real_dirs: tuple[str, str], fake_dirs: tuple[str, str], n: int = 5, size: int = 128) -> np.ndarray:
    """Two rows per direction (inputs, translations) of the first n test images, BGR uint8."""
    rows = []
    for real_dir, fake_dir in zip(real_dirs, fake_dirs):
        fakes = metrics.list_images(fake_dir)[:n]
        reals = {os.path.splitext(os.path.basename(p))[0]: p for p in metrics.list_images(real_dir)}
        pairs = [(reals.get(os.path.splitext(os.path.basename(f))[0]), f) for f in fakes]
        tiles = [[cv2.resize(cv2.imread(p), (size, size), interpolation=cv2.INTER_AREA)
                  if p else np.zeros((size, size, 3), np.uint8) for p in pair] for pair in pairs]
        rows += [np.concatenate([t[0] for t in tiles], axis=1), np.concatenate([t[1] for t in tiles], axis=1)]
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
    for direction in ('A2B', 'B2A'):
        r = result[direction]
        p = paper.get(direction)
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
              '', '## Not the paper\'s KID: the course "mean_KID"', '',
              'Earlier course ports reported GAN_Metrics-Tensorflow\'s `mean_KID` = ((0.02·KID(target, fake) + '
              '0.98·KID(source, fake)) / 2)×100, which mostly measures the distance to the *source* domain. '
              f'For comparison only: A2B {_fmt(result["A2B"]["course_mean_kid_x100"])}, '
              f'B2A {_fmt(result["B2A"]["course_mean_kid_x100"])}.']
    if extra and 'demo_error' in extra:
        e = extra['demo_error']
        lines += ['', '## Demo ground truth', '',
                  'The demo\'s domain B is a known filter of domain A, so each translation has a ground truth: '
                  'mean |pixel| error in [0, 1].', '',
                  '| direction | translation | identity baseline |', '|---|---|---|',
                  f'| A2B | {e["A2B"]:.4f} | {e["identity"]:.4f} |',
                  f'| B2A | {e["B2A"]:.4f} | {e["identity"]:.4f} |']
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
    paper = paper_results()['table1_ablation']
    rows = paper['rows'] if dataset == 'selfie2anime' else {}
    lines = [f'# Ablation on `{dataset}` (KID×100 ± std×100, lower is better)', '',
             '| variant | run | ours A2B | ours B2A | paper A2B | paper B2A |', '|---|---|---|---|---|---|']
    for run in runs:
        with open(find_metrics(run, dataset)) as f:
            record = json.load(f)
        variant = record.get('variant', 'U-GAT-IT')
        ours = [f'{_fmt(record[d]["kid_x100"])} ± {_fmt(record[d]["kid_std_x100"])}' for d in ('A2B', 'B2A')]
        theirs = [f'{m:.2f} ± {s:.2f}' for m, s in rows[variant]] if variant in rows else ['—', '—']
        lines.append(f'| {variant} | `{run}` (step {record.get("step")}) | {ours[0]} | {ours[1]} | '
                     f'{theirs[0]} | {theirs[1]} |')
    lines += ['', 'Paper: Kim et al. 2020, Table 1 (selfie2anime / anime2selfie). Ours: `--phase eval` of each run, '
              'with the protocol in its report.md.']
    return '\n'.join(lines) + '\n'
