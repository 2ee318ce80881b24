"""Does distillation pay off on my data? The user's student and teacher
configs, teacher weights and data: the teacher evaluated, the student
trained alone and distilled (the config's Distill settings) at each seed,
then one table and a verdict (payoff.md, payoff.json, map_curves.png in
the output folder). Runs are the user's commands (tools/train.py,
slim/distillation/distill.py, tools/eval.py), each in its own process,
reused when finished: rerun with more seeds to add them."""
import json
import os
import statistics

from detdistill.fileio import atomic_write

from . import runner
from .catalogue import Profile, catalogue
from .plots import plot_benchmark

__all__ = ['payoff_profile', 'verdict', 'run_payoff', 'format_payoff']

ROWS = ('teacher', 'baseline', 'distilled')


def payoff_profile(student, teacher, teacher_weights, out, opts=()):
    """A profile of the three rows for these configs and weights."""
    # the runs start in the repository root: absolute paths
    student, teacher = os.path.abspath(student), os.path.abspath(teacher)
    if os.path.exists(teacher_weights) or os.path.exists(
            teacher_weights + '.pdparams'):
        teacher_weights = os.path.abspath(teacher_weights)
    return Profile(
        name='payoff', student=student, teacher=teacher, make_data=(),
        methods=ROWS, out=out, budget_min=0,
        cost={'teacher': 0.05, 'train': 1.0, 'distill': 1.3},
        opts=tuple(opts), teacher_weights=teacher_weights, one_teacher=True,
        about='tools/payoff.py')


def _stats(summaries, row):
    vals = [100 * s['mAP']['11point'] for s in summaries
            if s['method'] == row]
    if not vals:
        return None
    return {'mean': statistics.mean(vals), 'spread': max(vals) - min(vals),
            'values': vals}


def verdict(teacher, baseline, distilled):
    """(verdict, explanation) from the mAP statistics of the three rows
    ({'mean', 'spread', 'values'} each): `pays off` when the distilled
    student's mean is above the baseline's by more than the larger seed
    spread of the two, `worse than normal training` when below by more,
    else `no clear difference`; with one seed there is no spread to judge
    by and the verdict says so."""
    diff = distilled['mean'] - baseline['mean']
    seeds = min(len(baseline['values']), len(distilled['values']))
    noise = max(baseline['spread'], distilled['spread'])
    gap = teacher['mean'] - baseline['mean']
    parts = ['distilled - baseline = {:+.2f} mAP'.format(diff)]
    if gap > 0:
        parts.append('{:.0%} of the teacher-student gap ({:.2f})'.format(
            diff / gap, gap))
    else:
        parts.append('the teacher ({:.2f}) is not above the baseline '
                     '({:.2f})'.format(teacher['mean'], baseline['mean']))
    if seeds < 2:
        word = 'one seed: no spread to judge by'
        parts.append('run --seeds 0,1,2 for a verdict')
    elif diff > noise:
        word = 'pays off'
        parts.append('beyond the seed spread ({:.2f})'.format(noise))
    elif diff < -noise:
        word = 'worse than normal training'
        parts.append('beyond the seed spread ({:.2f})'.format(noise))
    else:
        word = 'no clear difference'
        parts.append('within the seed spread ({:.2f})'.format(noise))
    return word, '; '.join(parts)


def format_payoff(stats, word, why, command):
    lines = ['# Does distillation pay off on this data?', '',
             '`{}`'.format(command), '',
             '| | mAP@0.5 11-point, mean | seed spread | per seed |',
             '|---|---|---|---|']
    for row in ROWS:
        s = stats[row]
        lines.append('| {} | {:.2f} | {:.2f} | {} |'.format(
            row, s['mean'], s['spread'], ', '.join('{:.2f}'.format(v)
                                                   for v in s['values'])))
    lines += ['', '**Verdict: {}** ({}).'.format(word, why), '',
              'Curves: map_curves.png (the students\' mAP over training), '
              'loss_curves.png.']
    return '\n'.join(lines) + '\n'


def run_payoff(profile, seeds, jobs=1, opts=(), command=''):
    """Train (or reuse) the runs, write payoff.md, payoff.json and the
    plots into profile.out; returns (stats, verdict, explanation)."""
    cat = catalogue()
    os.makedirs(profile.out, exist_ok=True)
    summaries = runner.run_all(list(ROWS), seeds, profile.out, profile, opts,
                               jobs, one_seed=[cat.teacher])
    stats = {row: _stats(summaries, row) for row in ROWS}
    word, why = verdict(stats['teacher'], stats['baseline'],
                        stats['distilled'])
    plot_benchmark([s for s in summaries if s['curve']], profile.out)
    atomic_write(os.path.join(profile.out, 'payoff.json'), json.dumps(
        {'rows': stats, 'verdict': word, 'explanation': why,
         'seeds': list(seeds), 'teacher_weights': profile.teacher_weights},
        indent=1))
    atomic_write(os.path.join(profile.out, 'payoff.md'),
                 format_payoff(stats, word, why, command))
    return stats, word, why
