"""What a report judges: every distilled row against the row its gap is
measured from, beyond the seed spread; a profile's own targets (teacher
strength, the baseline's plateau, more row pairs, rows that must agree);
and the step cost."""
from .catalogue import DEFAULT_BASELINE, catalogue

__all__ = ['plateau_gain', 'check_targets']


def plateau_gain(summary):
    """mAP points (11-point) the last quarter of a run's steps added: final
    eval minus the last eval at or before 3/4 of the steps."""
    curve = summary['curve']
    if not curve:
        return None
    end = curve[-1][0]
    before = [m for step, m in curve if step <= 0.75 * end]
    if not before:
        return None
    return 100 * (curve[-1][1]['11point'] - before[-1]['11point'])


def _against_spread(rows, m, other, known, holds, target):
    """(target, ok, why): `holds(mean of m - mean of other, spread)` with the
    larger seed spread of the two rows; with one seed, the spread measured
    before (`known`: {spread, measured_by}) or not judged (ok None)."""
    a, b = rows[m]['mAP_11point'], rows[other]['mAP_11point']
    diff = a['mean'] - b['mean']
    if min(len(a['values']), len(b['values'])) > 1:
        spread = max(a['spread'], b['spread'])
        ok, why = holds(diff, spread), 'largest seed spread {:.2f}'.format(
            spread)
    elif known is not None:
        ok, why = holds(diff, known['spread']), \
            'one seed; seed spread {:.2f} as measured by {}'.format(
                known['spread'], known['measured_by'])
    else:
        ok, why = None, 'seed spread unknown with one seed'
    return (target.format(m, other), ok,
            '{} - {} = {:+.2f}, {}'.format(m, other, diff, why))


def check_targets(rows, step_cost, summaries=(), goals=None):
    """[(target, met: True/False/None, detail)]: every distilled row
    against its baseline row and the seed spread; with a profile's `goals`
    (its catalogue targets: teacher_min, teacher_margin, plateau_gain) the
    regime's own checks; `pairs`: more (row, row it must beat) comparisons;
    `same`: (row, row) that must agree within the seed spread."""
    out = []
    goals = goals or {}
    methods, teacher = catalogue().methods, catalogue().teacher
    base = DEFAULT_BASELINE
    if teacher in rows and 'teacher_min' in goals:
        t = rows[teacher]['mAP_11point']['mean']
        out.append(('teacher at least {:.0f} mAP'.format(
            goals['teacher_min']), t >= goals['teacher_min'],
            'teacher {:.2f}'.format(t)))
    if {teacher, base} <= set(rows) and 'teacher_margin' in goals:
        d = rows[teacher]['mAP_11point']['mean'] - \
            rows[base]['mAP_11point']['mean']
        out.append(('teacher at least {:.0f} points above the baseline'.format(
            goals['teacher_margin']), d >= goals['teacher_margin'],
            'teacher - baseline = {:+.2f}'.format(d)))
    gains = [g for g in (plateau_gain(s) for s in summaries
                         if s['method'] == base) if g is not None]
    if gains and 'plateau_gain' in goals:
        out.append(('baseline at its plateau: the last quarter of its steps '
                    'adds under {:.0f} point'.format(goals['plateau_gain']),
                    max(gains) < goals['plateau_gain'],
                    'gain over the last quarter per seed: {}'.format(
                        ', '.join('{:+.2f}'.format(g) for g in gains))))
    pairs = [(m, methods[m].baseline) for m in rows if methods[m].distills] \
        + [(m, b) for m, b in goals.get('pairs', ()) if m in rows]
    known = goals.get('one_seed_spread')
    for m, b in pairs:
        if b in rows:
            out.append(_against_spread(
                rows, m, b, known, lambda d, s: d > s,
                '{} beats {} by more than the seed spread'))
    for m, other in goals.get('same', ()):
        if {m, other} <= set(rows):
            out.append(_against_spread(
                rows, m, other, known, lambda d, s: abs(d) <= s,
                '{} equals {} within the seed spread'))
    gaps = {m: r['gap_recovered_11point'] for m, r in rows.items()
            if r.get('gap_recovered_11point') is not None}
    if gaps and goals.get('half_gap', True):
        best = max(gaps, key=gaps.get)
        out.append(('some method recovers at least half of the gap',
                    gaps[best] >= 0.5, 'best: {} at {:.0%}'.format(
                        best, gaps[best])))
    if step_cost:
        r = step_cost['ratio_distill_vs_student_plus_teacher']
        out.append(('distill step within 1.15x of student step + teacher '
                    'forward', r <= 1.15, '{:.3f}x'.format(r)))
        s = step_cost['loss_share_of_distill_step']
        out.append(('distillation loss under 5% of a step', s < 0.05,
                    '{:.1%}'.format(s)))
    return out
