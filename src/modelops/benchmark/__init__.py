"""`mops bench`: executors measured side by side.

- runner.py: runs the same task through each executor's WorkerRuntime, interleaved in rounds;
- accounting.py: CPU of this process and every process it started, from /proc;
- bench_bundle.py: the built-in bench model as a file bundle, a copy of a user's bundle, its study;
- targets.py: the acceptance targets (passed in: `--target-*` options), checked against the numbers;
- report.py: the text table;
- bench_model.py: the model the built-in bundle runs; throughput.py: study throughput (issue 15).
"""
