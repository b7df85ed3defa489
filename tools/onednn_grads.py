"""Which gradients of a static Paddle program on oneDNN kernels are right, in the installed Paddle.

    python tools/onednn_grads.py            # every case, one line each
    python tools/onednn_grads.py --case subtract

A training step on oneDNN kernels has to be a static program (Paddle's eager CPU kernels ignore
FLAGS_use_onednn). Each case below is an operator the U-GAT-IT step uses: it is differentiated in a
static program on the CPU with FLAGS_use_onednn on, and the gradients are compared with eager Paddle's
(its reference CPU kernels). Each case runs in its own process, so a crash is reported, not suffered.
Re-run after a Paddle upgrade: docs/performance.md says what the failures cost and where they stood.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

TOLERANCE = 1e-4          # relative to the largest reference gradient


def cases() -> dict:
    """name → (input shapes, loss function, which inputs get a gradient)."""
    import paddle
    import paddle.nn.functional as F

    def weighted(y):                   # a loss whose gradient differs at every output element
        return (y * paddle.arange(y.size, dtype='float32').reshape(y.shape) / y.size).sum()
    return {
        'subtract': ([[4, 4], [4, 4]], lambda x, y: ((x - y) ** 2).sum(), 'xy'),
        'divide': ([[4, 4], [4, 4]], lambda x, y: ((x / (y.abs() + 1)) ** 2).sum(), 'xy'),
        'matmul [2,16]x[16,1]': ([[2, 16], [16, 1]], lambda x, w: (paddle.matmul(x, w) ** 2).sum(), 'xy'),
        'matmul, one input differentiated': ([[2, 16], [16, 1]], lambda x, w: (paddle.matmul(x, w) ** 2).sum(), 'y'),
        'max_pool2d twice, same shape': ([[1, 4, 8, 8], [1, 4, 8, 8]],
                                         lambda x, y: weighted(F.max_pool2d(x, 8)) + weighted(F.max_pool2d(y, 8)), 'xy'),
        'pad reflect': ([[1, 4, 8, 8]], lambda x: weighted(F.pad(x, [1, 1, 1, 1], mode='reflect')), 'x'),
        'interpolate nearest': ([[1, 4, 8, 8]], lambda x: weighted(F.interpolate(x, scale_factor=2, mode='nearest')), 'x'),
        'bce with logits after a scale': ([[1, 2]], lambda x: F.binary_cross_entropy_with_logits(
            x * 2.0, paddle.ones([1, 2])), 'x'),
        'conv2d': ([[1, 4, 10, 10], [8, 4, 3, 3]], lambda x, w: weighted(F.conv2d(x, w)), 'xy'),
        'concat': ([[1, 4, 8, 8], [1, 4, 8, 8]], lambda x, y: weighted(paddle.concat([x, y], axis=1)), 'xy'),
    }


def check(name: str) -> dict:
    """Differentiate one case eagerly and in a static program on oneDNN; the relative error per input."""
    import numpy as np
    import paddle
    shapes, loss, wanted = cases()[name]
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s).astype('float32') for s in shapes]
    eager = [paddle.to_tensor(v, stop_gradient=False) for v in values]
    loss(*eager).backward()
    reference = [t.grad.numpy() for t in eager]

    paddle.set_flags({'FLAGS_use_onednn': True})
    paddle.enable_static()
    program = paddle.static.Program()
    with paddle.static.program_guard(program, paddle.static.Program()):
        inputs = [paddle.static.data(f'x{i}', s, 'float32') for i, s in enumerate(shapes)]
        differentiated = [x for x, tag in zip(inputs, 'xy') if tag in wanted]
        for x in differentiated:
            x.stop_gradient = False
        grads = paddle.static.gradients([loss(*inputs)], differentiated)
    try:
        got = paddle.static.Executor(paddle.CPUPlace()).run(
            program, feed={f'x{i}': v for i, v in enumerate(values)}, fetch_list=grads)
    except Exception as e:                                        # Paddle raises many types here
        return {'error': f'{type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}'}
    expected = [r for r, tag in zip(reference, 'xy') if tag in wanted]
    return {'errors': [float(np.abs(g - r).max() / np.abs(r).max()) for g, r in zip(got, expected)]}


def second_backward_after_inplace_assign() -> dict:
    """A program that writes a persistable in place (as spectral norm's power iteration does) and then
    differentiates twice (the D update, then the G update through D). Needs no oneDNN."""
    import paddle
    paddle.enable_static()
    with paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()):
        w = paddle.static.create_parameter([3, 4], 'float32')
        u = paddle.static.create_parameter([4], 'float32')
        u.stop_gradient = True
        x = paddle.static.data('x', [2, 3], 'float32')
        sigma = paddle.mv(w, u).sum()
        paddle.assign(u * 1.0, u)
        paddle.static.gradients([(paddle.matmul(x, w) / sigma).sum()], [w])
        x.stop_gradient = False
        try:
            paddle.static.gradients([paddle.matmul(x, w).sum()], [x])
        except Exception as e:
            return {'error': f'{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}'}
    return {'errors': [0.0]}


SPECIAL = {'second backward after an in-place assign': second_backward_after_inplace_assign}


def verdict(result: dict) -> str:
    if 'crash' in result:
        return f'CRASH ({result["crash"]})'
    if 'error' in result:
        return f'ERROR {result["error"]}'
    worst = max(result['errors'])
    return f'ok ({worst:.1e})' if worst <= TOLERANCE else f'WRONG (relative error {worst:.2g})'


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--case', help='one case by name (default: all, each in its own process)')
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = SPECIAL[args.case]() if args.case in SPECIAL else check(args.case)
        print(json.dumps(result))
        return
    import paddle
    names = [args.case] if args.case else list(cases()) + list(SPECIAL)
    print(f'# Paddle {paddle.__version__} ({paddle.version.commit[:7]}), static program on oneDNN vs eager, CPU')
    for name in names:
        run = subprocess.run([sys.executable, __file__, '--child', '--case', name], capture_output=True, text=True)
        lines = run.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if run.returncode == 0 and lines else {'crash': f'exit status {run.returncode}'}
        print(f'{name:45s} {verdict(result)}', flush=True)


if __name__ == '__main__':
    main()
