"""U-GAT-IT in the browser: upload a photo (or take one with the webcam), see its translation and the
CAM heatmap of where the generator looked. The app is extras/webapp.py; docs/app.md has the details.

    python main.py --demo && pip install -r requirements-app.txt
    python app.py                              # the newest checkpoint of --dataset demo in --result_dir results
    python app.py --checkpoint results/selfie2anime/model/selfie2anime_params_latest.pdparams --port 8060
"""
from extras.webapp import main

if __name__ == '__main__':
    main()
