"""The report's pictures: mAP over steps per row, loss components per
student row, distill/det loss ratio per distilled row. Each is drawn from
a plain series function, which the tests check."""
import os

import matplotlib

matplotlib.use('Agg')  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .catalogue import catalogue  # noqa: E402

__all__ = ['map_curves', 'loss_curves', 'loss_ratio_series', 'plot_benchmark',
           'plot_loss_ratio']

LOSS_KEYS = ('loss', 'det_loss', 'distill_loss', 'teacher_loss')


def _by_method(summaries):
    by = {}
    for s in summaries:
        by.setdefault(s['method'], []).append(s)
    return by


def map_curves(summaries):
    """{method: (steps, mean, low, high, seeds)}: eval mAP 11-point (%) over
    steps, over the seeds whose curve has the first seed's steps."""
    out = {}
    for m, runs in _by_method(summaries).items():
        steps = [p[0] for p in runs[0]['curve']]
        vals = np.array([[100 * p[1]['11point'] for p in r['curve']]
                         for r in runs if len(r['curve']) == len(steps)])
        out[m] = (steps, vals.mean(0), vals.min(0), vals.max(0), len(vals))
    return out


def loss_curves(summaries):
    """{method: (seed, {loss key: [(step, value)]})} of the first seed of
    every student row (the teacher's losses are not distillation's)."""
    teacher = catalogue().teacher
    out = {}
    for m, runs in _by_method(summaries).items():
        if m != teacher:
            run = runs[0]
            out[m] = (run['seed'], {
                k: [(r['step'], r[k]) for r in run['losses'] if k in r]
                for k in LOSS_KEYS if any(k in r for r in run['losses'])})
    return out


def loss_ratio_series(run):
    """[(step, distill_loss / det_loss)] of one distilled run's log."""
    return [(r['step'], r['distill_loss'] / r['det_loss'])
            for r in run['losses'] if r.get('det_loss') and
            r.get('distill_loss') is not None]


def plot_benchmark(summaries, out_dir):
    """map_curves.png: `map_curves` (mean line, range band);
    loss_curves.png: `loss_curves`, one panel per student row."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, (steps, mean, low, high, n) in map_curves(summaries).items():
        ax.plot(steps, mean, marker='o', label='{} (n={})'.format(m, n))
        if n > 1:
            ax.fill_between(steps, low, high, alpha=.15)
    ax.set_xlabel('step')
    ax.set_ylabel('mAP@0.5 11-point (%)')
    ax.grid(alpha=.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'map_curves.png'), dpi=90)
    plt.close(fig)

    panels = loss_curves(summaries)
    if not panels:  # a teacher-only run has no loss panels to draw
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8),
                             squeeze=False)
    for ax, (m, (seed, curves)) in zip(axes[0], panels.items()):
        for k, pts in curves.items():
            ax.plot(*zip(*pts), label=k)
        ax.set_yscale('log')
        ax.set_title('{} (seed {})'.format(m, seed))
        ax.set_xlabel('step')
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'loss_curves.png'), dpi=90)
    plt.close(fig)


def plot_loss_ratio(summaries, out_dir):
    """loss_ratio.png: distillation loss / detection loss over training, per
    distilled method (its first seed), so the balance a weight gives is
    visible."""
    runs = {}
    for s in summaries:
        if loss_ratio_series(s) and s['method'] not in runs:
            runs[s['method']] = s
    if not runs:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, run in runs.items():
        ax.plot(*zip(*loss_ratio_series(run)), label='{} (seed {})'.format(
            m, run['seed']))
    ax.set_yscale('log')
    ax.set_xlabel('step')
    ax.set_ylabel('distill_loss / det_loss')
    ax.grid(alpha=.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'loss_ratio.png'), dpi=90)
    plt.close(fig)
