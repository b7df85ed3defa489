"""Everything beyond the paper. The top-level files hold what the official code holds (networks.py the
layers, UGATIT.py the trainer, dataset.py, utils.py, main.py); what a reproduction needs besides lives
here, one concern per module:

    distributed.py   data parallelism on several processes (paddle.distributed fleet)
    guards.py        numerical guards (non-finite steps skipped), stop signals
    amp.py           mixed precision (--amp)
    checkpoints.py   checkpoint files: atomic writes, discovery, fallback, one trainer per run folder
    monitor.py       progress on the console and in VisualDL
    deploy.py        translate your own photos (face crop), export, Paddle Inference engines
    webapp.py        the web app of app.py (Gradio)
    evaluation.py    the eval phase: KID/FID of the test translations beside the paper, reports
    metrics.py       KID and FID
    inception.py     the FID Inception-v3 and its weight files
    torch_file.py    reading torch.save files without torch
    tf_checkpoint.py reading TensorFlow checkpoints without TensorFlow
    tf_networks.py   the authors' TensorFlow architecture, to load and fine-tune their released model
    convert.py       official PyTorch and TensorFlow weights → our checkpoints
    demo_data.py     the offline demo dataset

Modules here may import the top-level files; the top-level files import only what they use from here.
"""
