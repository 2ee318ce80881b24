"""Rewrite the results tables of README.md and docs/*.md from the committed
results (bench/docs_tables.py); --check only lists the tables that differ
and exits 1 if any does.

python tools/dev/docs_tables.py [--check]
"""
import argparse
import sys


from bench.docs_tables import rewrite, stale_blocks


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--check', action='store_true')
    args = p.parse_args(argv)
    if args.check:
        stale = stale_blocks()
        for path, results in stale:
            print('{}: the table of {} differs from {}/results.json'.format(
                path, results, results))
        sys.exit(1 if stale else 0)
    for path in rewrite():
        print('rewrote', path)


if __name__ == '__main__':
    main()
