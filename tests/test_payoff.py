"""tools/payoff.py: does distillation pay off on my data? Its verdict
arithmetic, and one real run of the command on tiny data."""
import json
import os

import pytest

from conftest import STUDENT, TEACHER, run_tool, tiny_opts
from bench.payoff import verdict


def _row(*values):
    return {'mean': sum(values) / len(values),
            'spread': max(values) - min(values), 'values': list(values)}


@pytest.mark.parametrize('teacher, baseline, distilled, word, why', [
    ((40.,), (20., 22.), (30., 32.), 'pays off',
     'distilled - baseline = +10.00 mAP; 53% of the teacher-student gap '
     '(19.00); beyond the seed spread (2.00)'),
    ((40.,), (20., 22.), (16., 18.), 'worse than normal training',
     'distilled - baseline = -4.00 mAP; -21% of the teacher-student gap '
     '(19.00); beyond the seed spread (2.00)'),
    ((40.,), (20., 24.), (21., 25.), 'no clear difference',
     'distilled - baseline = +1.00 mAP; 6% of the teacher-student gap '
     '(18.00); within the seed spread (4.00)'),
    ((30.,), (31., 33.), (36., 37.), 'pays off',
     'distilled - baseline = +4.50 mAP; the teacher (30.00) is not above '
     'the baseline (32.00); beyond the seed spread (2.00)'),
    ((40.,), (20.,), (30.,), 'one seed: no spread to judge by',
     'distilled - baseline = +10.00 mAP; 50% of the teacher-student gap '
     '(20.00); run --seeds 0,1,2 for a verdict'),
])
def test_the_verdict(teacher, baseline, distilled, word, why):
    assert verdict(_row(*teacher), _row(*baseline), _row(*distilled)) == \
        (word, why)


def test_the_command_trains_both_students_and_reports_their_runs(
        demo_voc, tmp_path, teacher_weights):
    out = str(tmp_path / 'payoff')
    opts = [o for o in tiny_opts(demo_voc, '-', 1)
            if not o.startswith('save_dir=')]  # each run has its own
    r = run_tool(['tools/payoff.py', '-c', STUDENT, '-t', TEACHER,
                  '--teacher_pretrained', teacher_weights, '--seeds', '0,1',
                  '--jobs', '2', '--out', out, '-o'] + opts +
                 ['Distill.losses.l2.weight=0.01'], 600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(os.path.join(out, 'payoff.json')) as f:
        res = json.load(f)
    # every number is the last evaluation of its own run
    for row, seeds in (('baseline', [0, 1]), ('distilled', [0, 1]),
                       ('teacher', [0])):
        got = []
        for s in seeds:
            run = os.path.join(out, 'runs', '{}_s{}'.format(row, s))
            if row == 'teacher':
                with open(os.path.join(run, 'eval.json')) as f:
                    got.append(100 * json.load(f)['mAP']['11point'])
                continue
            cfg = os.path.splitext(os.path.basename(STUDENT))[0]
            with open(os.path.join(run, cfg, 'history.jsonl')) as f:
                evals = [json.loads(x) for x in f if '"eval"' in x]
            got.append(100 * evals[-1]['mAP']['11point'])
        assert res['rows'][row]['values'] == got, row
    assert (res['verdict'], res['explanation']) == verdict(
        res['rows']['teacher'], res['rows']['baseline'],
        res['rows']['distilled'])
    # the distilled row is distill.py with the config's Distill settings
    log = open(os.path.join(out, 'runs', 'distilled_s0', 'train.log')).read()
    assert 'Distillation: L2Distill x 0.01 on 3 pairs' in log
    report = open(os.path.join(out, 'payoff.md')).read()
    assert '**Verdict: {}** ({}).'.format(res['verdict'],
                                          res['explanation']) in report
    assert report in r.stdout
    assert os.path.isfile(os.path.join(out, 'map_curves.png'))
