"""cartback benchmarks: figures, not pass/fail tests (`make bench` = `python -m bench.run`).

Every run starts its own redis-server, its own SQLite databases (in a temp dir) and its own
app processes on free 127.0.0.1 ports, measures, stops everything it started and rewrites
``bench/README.md``. Speed is reported as ratios against a baseline measured in the same run,
because these machines are noisy.
"""
