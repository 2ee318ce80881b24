"""How long a benchmark has left, from what it has measured.

A running run that logs steps has its own seconds per step times its
remaining steps left. Any other run (pending, or not logging yet) takes the
measured length of runs of its kind (teacher, train, distill), in units of
the profile's cost so that a row's cost_scale applies; a kind not measured
yet borrows from the training runs that were, through the cost ratios. With
no such measurement the ETA is unknown (None), not a guess. An evaluation
(a teacher trained in another profile) measures its own kind only: its
seconds say nothing about training (scaled by cost ratios, an 11 s
evaluation at cost 0.05 once announced 'ETA 272s' for a 10-minute run)."""

__all__ = ['estimate', 'simulate_eta']


def estimate(pending, needs, jobs, running, finished, cost, kind):
    """Seconds until the last run ends, or None when unknown.

    running: {run: (elapsed_s, step, total_steps)}, step 0 before the first
    logged step; finished: {run: (wall_s, trained)} of the runs finished in
    this invocation (trained False for an evaluation); cost(run): its
    relative cost (the profile's cost of its kind times its cost_scale);
    kind(run): teacher, train or distill."""
    left, per_unit = {}, []  # per_unit: (kind, seconds per cost unit, trains)
    for r, (wall, trained) in finished.items():
        per_unit.append((kind(r), wall / cost(r), trained))
    for r, (elapsed, step, total) in running.items():
        if step and total:
            left[r] = elapsed * (total - step) / step
            per_unit.append((kind(r), elapsed * total / step / cost(r), True))

    def seconds(r):
        """A whole run of r's row, or None."""
        rates = [u for k, u, _ in per_unit if k == kind(r)] or \
            [u for _, u, trains in per_unit if trains]
        return cost(r) * sum(rates) / len(rates) if rates else None

    for r, (elapsed, _, _) in running.items():
        if r not in left:
            whole = seconds(r)
            if whole is None:
                return None
            left[r] = max(0., whole - elapsed)
    whole = {r: seconds(r) for r in pending}
    if None in whole.values():
        return None
    return simulate_eta(pending, needs, left, jobs, whole.__getitem__)


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
