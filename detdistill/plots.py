"""Pictures of training: loss components and mAP over steps."""
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
