"""The entry file of the AI Studio app (AI Studio runs a Gradio app's ``app.gradio.py``; docs/app.md,
"Publish on AI Studio"): app.py with the flags below. Host and port stay Gradio's defaults, which
read $GRADIO_SERVER_NAME and $GRADIO_SERVER_PORT, so the platform can set them.
"""
import sys

import app

# Which model the published app serves. Default: the newest checkpoint of results/demo (python main.py --demo);
# the authors' converted model: ['--dataset', 'selfie2anime'], or ['--checkpoint', 'path/to/file.pdparams'].
FLAGS: list[str] = []

if __name__ == '__main__':
    app.main(FLAGS + sys.argv[1:])
