"""The authors' TensorFlow architecture (taki0112/UGATIT), to load and fine-tune their released model.
(Work in progress.)"""
from __future__ import annotations


class TFResnetGenerator:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError('--arch tf is not implemented yet')


class TFDiscriminator(TFResnetGenerator):
    pass


def tf_optimizer_options(weight_decay: float) -> dict:
    raise NotImplementedError('--arch tf is not implemented yet')
