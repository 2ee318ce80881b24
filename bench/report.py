"""From run summaries to the report: statistics per row (mean and spread
over seeds, gap recovered), the loss balance, the loss-weight sweep table,
and REPORT.md."""
import os
import statistics

from detdistill.config import load_config
from detdistill.distill.settings import LOSS_TYPES, distill_settings

from .catalogue import catalogue
from .plots import loss_ratio_series
from .runs import ROOT, overrides, profile_opts

__all__ = ['aggregate', 'loss_balance', 'loss_weight', 'sweep_table',
           'write_report']


def aggregate(summaries):
    """{row: statistics over its seeds}; a distilled row's gap recovered
    is measured from its baseline row."""
    by = {}
    for s in summaries:
        by.setdefault(s['method'], []).append(s)
    rows = {}
    for m, runs in by.items():
        def stat(f):
            vals = [f(r) for r in runs]
            return {'mean': statistics.mean(vals), 'spread': (
                max(vals) - min(vals)), 'values': vals}
        rows[m] = {
            'seeds': [r['seed'] for r in runs],
            'mAP_11point': stat(lambda r: 100 * r['mAP']['11point']),
            'mAP_area': stat(lambda r: 100 * r['mAP']['area']),
            'train_images_per_sec': stat(lambda r: r['train_images_per_sec']),
            'step_time_s': stat(lambda r: r['step_time_s']),
            'peak_rss_mb': stat(lambda r: r['peak_rss_mb']),
            'eval_images_per_sec': stat(lambda r: r['eval_images_per_sec']),
        }
    methods, teacher = catalogue().methods, catalogue().teacher
    if teacher in rows:
        for kind in ('mAP_11point', 'mAP_area'):
            t = rows[teacher][kind]['mean']
            for m, r in rows.items():
                base = methods[m].baseline
                if not methods[m].distills or base not in rows:
                    continue
                b = rows[base][kind]['mean']
                r['gap_recovered_' + kind.split('_')[1]] = (
                    r[kind]['mean'] - b) / (t - b) if t != b else None
    if 'baseline' in rows:
        base = rows['baseline']['step_time_s']['mean']
        for r in rows.values():
            r['step_time_vs_baseline'] = r['step_time_s']['mean'] / base
    return rows


def loss_balance(summaries):
    """{method: [mean distill_loss / det_loss over seeds at 10 %, 50 % and
    100 % of training]} from the logged steps."""
    by = {}
    for s in summaries:
        series = loss_ratio_series(s)
        if series:
            picks = [series[min(len(series) - 1, int(f * len(series)))][1]
                     for f in (0.1, 0.5, 1.0)]
            by.setdefault(s['method'], []).append(picks)
    return {m: [statistics.mean(v[i] for v in vals) for i in range(3)]
            for m, vals in by.items()}


def loss_weight(method, profile):
    """(loss, its class, weight) of a distill row in `profile`, as the
    library resolves the row's config: the loss's name with its options
    (e.g. 'fine_grained (obj_target=soft)'), its class name, and its weight
    with the loss's default applied."""
    cfg = load_config(os.path.join(ROOT, profile.student), profile_opts(
        profile) + overrides(method, profile))
    loss = distill_settings(cfg).losses[0]
    name = {cls: n for n, cls in LOSS_TYPES.items()}.get(loss.type, loss.name)
    if loss.options:
        name += ' ({})'.format(', '.join('{}={}'.format(k, v) for k, v in
                                         sorted(loss.options.items())))
    return name, loss.type, loss.weight


def sweep_table(summaries, profile, seed=0):
    """Rows (method, loss, weight, mAP 11pt, mAP area, distill/det at the
    end) of the profile's one-seed sweep and of the profile's own rows with
    a loss it varies, all at `seed`, sorted by loss then weight: the
    comparison the sweep is for."""
    methods = catalogue().methods
    weights = {m: loss_weight(m, profile) for m in set(profile.sweep) | {
        s['method'] for s in summaries if methods[s['method']].distills and
        s['method'] in profile.methods}}
    varied = {weights[m][1] for m in profile.sweep}
    out = []
    for s in summaries:
        m = s['method']
        if s['seed'] != seed or m not in weights or (
                m not in profile.sweep and weights[m][1] not in varied):
            continue
        loss, _, weight = weights[m]
        ratio = loss_ratio_series(s)
        out.append((m, loss, weight, 100 * s['mAP']['11point'],
                    100 * s['mAP']['area'], ratio[-1][1] if ratio else None))
    # 'auto' (a weight set each step) sorts after the fixed weights
    return sorted(out, key=lambda r: (r[1], isinstance(r[2], str),
                                      str(r[2]) if isinstance(r[2], str)
                                      else r[2]))


def _fmt(stat, digits=2):
    if len(stat['values']) < 2:
        return '{:.{d}f}'.format(stat['mean'], d=digits)
    return '{:.{d}f} ± {:.{d}f}'.format(stat['mean'], stat['spread'] / 2,
                                        d=digits)


def _timing_line(rows, run_wall_s, bench_wall_s, jobs, budget_min):
    runs = sum(len(r['seeds']) for r in rows.values())
    if bench_wall_s is None:
        return ''
    if not run_wall_s:
        return ('All {} runs were reused from earlier invocations; their '
                'timing is not repeated here.'.format(runs))
    return ('Wall time of this benchmark: **{:.1f} min** with {} run(s) at '
            'a time (target for the whole benchmark: {} min); training and '
            'evaluation time of the runs it trained, summed: {:.1f} min.'
            .format(bench_wall_s / 60, jobs, budget_min, run_wall_s / 60))


def _split_notes(rows):
    """The notes of the data splits the reported rows read."""
    cat = catalogue()
    used = {cat.methods[m].split for m in rows} - {None}
    return ' '.join(s['note'] for name, s in cat.splits.items()
                    if name in used)


def write_report(rows, step_cost, path, command_line, profile, targets=None,
                 run_wall_s=None, bench_wall_s=None, jobs=1, data_note=None,
                 balance=None, sweep=None, sweep_seed=0, missing=()):
    order = [m for m in catalogue().methods if m in rows]
    lines = [
        '# Benchmark: distillation, {} profile'.format(profile.name), '',
        'Produced by `{}` on this machine ({} CPU cores, no GPU). Every '
        'number below was measured by the runs it made or reused (runs are '
        'reused only from this output directory).'.format(
            command_line, os.cpu_count()), '',
        profile.about, '',
        'mAP@0.5 in %, mean ± half the range over seeds {}; "gap recovered" '
        '= (distilled - baseline) / (teacher - baseline) on the means.'.format(
            sorted({s for r in rows.values() for s in r['seeds']})), '',
        _timing_line(rows, run_wall_s, bench_wall_s, jobs,
                     profile.budget_min), '',
        _split_notes(rows), '',
        'Data: {}.'.format(data_note) if data_note else '', '',
        '**Not finished yet** (this report covers the finished runs only): '
        '{}.'.format(', '.join('{} seed {}'.format(*r) for r in missing))
        if missing else '', '',
        '| method | mAP 11-point | mAP area | gap recovered (11pt / area) | '
        'train img/s | step time vs baseline | peak RSS (MB) | eval img/s |',
        '|---|---|---|---|---|---|---|---|']
    for m in order:
        r = rows[m]
        gap = '-'
        if r.get('gap_recovered_11point') is not None:
            gap = '{:.0%} / {:.0%}'.format(r['gap_recovered_11point'],
                                           r['gap_recovered_area'])
        lines.append('| {} | {} | {} | {} | {:.1f} | {} | {:.0f} | {:.1f} |'
                     .format(m, _fmt(r['mAP_11point']), _fmt(r['mAP_area']),
                             gap, r['train_images_per_sec']['mean'],
                             '{:.2f}x'.format(r['step_time_vs_baseline'])
                             if 'step_time_vs_baseline' in r else '-',
                             r['peak_rss_mb']['mean'],
                             r['eval_images_per_sec']['mean']))
    if step_cost:
        lines += _step_cost_lines(step_cost)
    if balance:
        lines += ['', '## Loss balance: distill_loss / det_loss', '',
                  'Mean over seeds of the logged ratio at 10 %, 50 % and the '
                  'end of training (curve of the first seed: '
                  '[loss_ratio.png](loss_ratio.png)).', '',
                  '| method | 10 % | 50 % | end |', '|---|---|---|---|'] + [
            '| {} | {:.3g} | {:.3g} | {:.3g} |'.format(m, *balance[m])
            for m in order if m in balance]
    if sweep:
        lines += ['', '## Loss-weight sweep (seed {})'.format(sweep_seed), '',
                  'Every row at the same seed, so the same initialisation '
                  'and data order; one seed, so a difference smaller than '
                  'the seed spread of the rows above says nothing.', '',
                  '| method | loss | weight | mAP 11-point | mAP area | '
                  'distill/det at the end |', '|---|---|---|---|---|---|'] + [
            '| {} | {} | {} | {:.2f} | {:.2f} | {} |'.format(
                m, loss, w if isinstance(w, str) else '{:g}'.format(w), a, b, '{:.3g}'.format(r) if r is not None
                else '-') for m, loss, w, a, b, r in sweep]
    if targets:
        lines += ['', '## Targets', ''] + ['- {}: **{}** ({})'.format(
            name, {True: 'met', False: 'NOT met'}.get(ok, 'not measured'), why)
            for name, ok, why in targets]
    lines += ['', '![mAP over steps](map_curves.png)', '',
              '![loss components](loss_curves.png)', '']
    with open(path, 'w') as f:
        f.write('\n'.join(lines))


def _step_cost_lines(c):
    lines = [
        '', '## Cost of one step (batch {}, median of interleaved repeats, '
        'seconds)'.format(c['batch_size']), '',
        '| student train step | teacher inference forward | distill step '
        '({}) | distill loss alone (fwd+bwd) |'.format(
            c.get('distill_method', 'l2')), '|---|---|---|---|',
        '| {student_train_step:.4f} | {teacher_inference_forward:.4f} | '
        '{distill_step:.4f} | {distill_loss_only:.4f} |'.format(**c),
        '', '- distill step / (student step + teacher forward): '
        '**{:.3f}x** (target ≤ 1.15x)'.format(
            c['ratio_distill_vs_student_plus_teacher']),
        '- distill step / student step: {:.2f}x'.format(
            c['ratio_distill_vs_student']),
        '- distillation loss share of the distill step: **{:.1%}** '
        '(target < 5%)'.format(c['loss_share_of_distill_step'])]
    if c.get('teacher_cache'):
        lines.append('- the teacher cache is on: the distill step reads '
                     "the teacher's outputs from it, as every epoch after "
                     'the first does')
    return lines
