"""The ETA: replaying the scheduler on estimated run lengths."""

__all__ = ['simulate_eta']


def simulate_eta(pending, needs, busy, jobs, seconds):
    """Seconds until the last run ends, replaying the scheduler: `busy` maps
    each running run to its seconds left, `seconds(run)` estimates a whole
    run, and pending runs start in plan order once a worker is free and what
    they need has finished (a distill run waits for its teacher even when a
    worker idles, so the ETA must too)."""
    finish = dict(busy)
    free = list(busy.values()) + [0.] * max(0, jobs - len(busy))
    todo = list(pending)

    def start(r, t):
        return max([t] + [finish.get(d, float('inf') if d in todo else 0.)
                          for d in needs[r]])
    while todo:
        free.sort()
        r = min(todo, key=lambda r: start(r, free[0]))  # first ready in order
        begin = start(r, free[0])
        todo.remove(r)
        finish[r] = free[0] = begin + seconds(r)
    return max(free, default=0.)
