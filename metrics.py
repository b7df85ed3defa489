"""KID×100 ± std×100 and FID of any two image folders, computed as ``--phase eval`` computes them
(the code is extras/metrics.py; docs/metrics.md has the protocol):

    python metrics.py --real dataset/selfie2anime/testB --fake results/selfie2anime/test/A2B
"""
import warnings

warnings.filterwarnings('ignore', message='No ccache found')   # Paddle's import-time note for C++ extension builders

from extras.metrics import main

if __name__ == '__main__':
    main()
