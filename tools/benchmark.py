"""Benchmark distillation (bench/cli.py; `--help` for the flags):

python tools/benchmark.py [--profile PROFILE] [--methods ...|sweep]
                          [--seeds 0,1] [--out DIR] [--jobs N]
                          [--report_only] [-o k=v ...]
"""
from bench.cli import main

if __name__ == '__main__':
    main()
