"""Train under ``paddle.distributed.launch`` (or alone) and dump every rank's final networks and inputs.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/dist_worker.py OUT [main.py flags]
    python tests/dist_worker.py OUT [main.py flags]

Writes OUT/rank<r>.npz with every parameter and buffer (spectral-norm u/v, ρ included) and the input
batches of every step (``input/A/<step>``, ``input/B/<step>``). Test hooks, from the environment:
UGATIT_RHO_OUTSIDE=1 starts half of the ρ at 1.2 and half at -0.2 (so that the clipper acts);
UGATIT_FAIL_RANK=r and UGATIT_FAIL_STEP=s raise in rank r at step s.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import main  # noqa: E402
from networks import GENERATORS, ILN, adaILN  # noqa: E402
from UGATIT import UGATIT  # noqa: E402


def run(out: str, argv: list) -> None:
    main.setup_logging()
    args = main.parse_args(argv)
    main.set_device(args)
    gan = UGATIT(args)
    gan.build_model()
    if os.environ.get('UGATIT_RHO_OUTSIDE'):
        norms = [l for g in GENERATORS for l in gan.networks()[g].sublayers() if isinstance(l, (adaILN, ILN))]
        for i, layer in enumerate(norms):
            layer.rho.set_value(np.full(layer.rho.shape, 1.2 if i % 2 else -0.2, np.float32))
    inputs, original = {}, UGATIT.train_step
    fail_rank, fail_step = int(os.environ.get('UGATIT_FAIL_RANK', -1)), int(os.environ.get('UGATIT_FAIL_STEP', -1))

    def train_step(self, real_A, real_B):
        step = self.start_step + 1
        if paddle.distributed.get_rank() == fail_rank and step == fail_step:
            raise RuntimeError(f'injected failure on rank {fail_rank} at step {fail_step}')
        inputs[f'input/A/{step}'], inputs[f'input/B/{step}'] = real_A.numpy(), real_B.numpy()
        return original(self, real_A, real_B)
    UGATIT.train_step = train_step
    gan.train()
    state = {f'{name}.{k}': v.numpy() for name, net in gan.networks().items() for k, v in net.state_dict().items()}
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, f'rank{paddle.distributed.get_rank()}.npz'), **state, **inputs)


if __name__ == '__main__':
    run(sys.argv[1], sys.argv[2:])
