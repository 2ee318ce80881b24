"""Pictures of training: loss components and mAP over steps."""
import os

import matplotlib

matplotlib.use('Agg')  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

from .fileio import replaced  # noqa: E402

SKIP = {'kind', 'step', 'epoch', 'lr', 'batch_time', 'data_time', 'ips',
        'total_steps'}


def plot_history(records, path, title=''):
    """records: HistoryWriter's list of dicts. Writes one PNG with the loss
    components (left) and eval mAP (right)."""
    train = [r for r in records if r.get('kind') == 'train']
    evals = [r for r in records if r.get('kind') == 'eval']
    if not train and not evals:
        return None
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = sorted({k for r in train for k in r} - SKIP)
    for k in keys:
        pts = [(r['step'], r[k]) for r in train if k in r]
        ax_loss.plot(*zip(*pts), label=k, lw=1.2)
    ax_loss.set_xlabel('step')
    ax_loss.set_ylabel('loss (window mean)')
    ax_loss.set_yscale('log')
    ax_loss.legend(fontsize=7)
    ax_loss.grid(alpha=.3)
    for name in ('11point', 'area'):
        pts = [(r['step'], 100 * r['mAP'][name]) for r in evals]
        if pts:
            ax_map.plot(*zip(*pts), marker='o', label='mAP@0.5 ' + name)
    ax_map.set_xlabel('step')
    ax_map.set_ylabel('mAP (%)')
    if evals:  # a run without --eval has no mAP to show
        ax_map.legend(fontsize=8)
    ax_map.grid(alpha=.3)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        replaced(path, lambda tmp: fig.savefig(tmp, dpi=90), suffix='.png')
    finally:
        plt.close(fig)
    return path


def plot_benchmark(summaries, out_dir):
    """map_curves.png: eval mAP over steps per method (mean over seeds);
    loss_curves.png: detection and distillation losses over steps."""
    import numpy as np
    by = {}
    for s in summaries:
        by.setdefault(s['method'], []).append(s)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, runs in by.items():
        steps = [p[0] for p in runs[0]['curve']]
        vals = np.array([[100 * p[1]['11point'] for p in r['curve']]
                         for r in runs if len(r['curve']) == len(steps)])
        ax.plot(steps, vals.mean(0), marker='o', label='{} (n={})'.format(
            m, len(vals)))
        if len(vals) > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), alpha=.15)
    ax.set_xlabel('step')
    ax.set_ylabel('mAP@0.5 11-point (%)')
    ax.grid(alpha=.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'map_curves.png'), dpi=90)
    plt.close(fig)

    students = [m for m in by if m != 'teacher']
    if not students:  # a teacher-only run has no loss panels to draw
        return
    fig, axes = plt.subplots(1, len(students), figsize=(4 * len(students), 3.8),
                             squeeze=False)
    for ax, m in zip(axes[0], students):
        run = by[m][0]
        keys = [k for k in ('loss', 'det_loss', 'distill_loss', 'teacher_loss')
                if any(k in r for r in run['losses'])]
        for k in keys:
            pts = [(r['step'], r[k]) for r in run['losses'] if k in r]
            ax.plot(*zip(*pts), label=k)
        ax.set_yscale('log')
        ax.set_title('{} (seed {})'.format(m, run['seed']))
        ax.set_xlabel('step')
        ax.grid(alpha=.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'loss_curves.png'), dpi=90)
    plt.close(fig)


def loss_ratio_series(run):
    """[(step, distill_loss / det_loss)] of one distilled run's log."""
    return [(r['step'], r['distill_loss'] / r['det_loss'])
            for r in run['losses'] if r.get('det_loss') and
            r.get('distill_loss') is not None]


def plot_loss_ratio(summaries, out_dir):
    """loss_ratio.png: distillation loss / detection loss over training, per
    distilled method (seed 0 or the first seed), so the balance a weight
    gives is visible."""
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
