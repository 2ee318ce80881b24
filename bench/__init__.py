"""Measurement, beside the library (detdistill) rather than inside it: the
experiment catalogue (catalogue.yaml), the benchmark's runner, report and
targets, the step timer, the peer comparison with PaddleDetection, and the
exported models' speed. tools/benchmark.py and tools/dev/ run it."""
