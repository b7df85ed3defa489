"""Train under ``paddle.distributed.launch`` (or alone) and dump every rank's final networks.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/dist_worker.py OUT [main.py flags]
    python tests/dist_worker.py OUT [main.py flags]

Writes OUT/rank<r>.npz with every parameter and buffer (spectral-norm u/v, ρ included).
Test hooks, from the environment: UGATIT_RHO_OUTSIDE=1 starts half of the ρ at 1.2 and half at
-0.2 (so that the clipper acts); UGATIT_FAIL_RANK=r and UGATIT_FAIL_STEP=s raise in rank r at
step s.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import main  # noqa: E402
from networks import ILN, adaILN  # noqa: E402
from UGATIT import NETWORKS, UGATIT, _unwrap  # noqa: E402


def push_rho_outside(gan):
    norms = [l for g in (gan.genA2B, gan.genB2A) for l in _unwrap(g).sublayers() if isinstance(l, (adaILN, ILN))]
    for i, layer in enumerate(norms):
        layer.rho.set_value(np.full(layer.rho.shape, 1.2 if i % 2 else -0.2, np.float32))


def inject_failure(rank: int, step: int):
    original = UGATIT.train_step

    def train_step(self, real_A, real_B):
        if self.rank == rank and self.start_step + 1 == step:
            raise RuntimeError(f'injected failure on rank {rank} at step {step}')
        return original(self, real_A, real_B)
    UGATIT.train_step = train_step


def run(out: str, argv: list) -> None:
    main.setup_logging()
    args = main.parse_args(argv)
    main.set_device(args)
    if 'UGATIT_FAIL_RANK' in os.environ:
        inject_failure(int(os.environ['UGATIT_FAIL_RANK']), int(os.environ['UGATIT_FAIL_STEP']))
    gan = UGATIT(args)
    gan.build_model()
    if os.environ.get('UGATIT_RHO_OUTSIDE'):
        push_rho_outside(gan)
    gan.train()
    state = {f'{name}.{k}': v.numpy() for name in NETWORKS for k, v in _unwrap(getattr(gan, name)).state_dict().items()}
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, f'rank{paddle.distributed.get_rank()}.npz'), **state)


if __name__ == '__main__':
    run(sys.argv[1], sys.argv[2:])
