"""clusterctl against its peers, side by side, on a fresh multi-host test bed: `python -m benchmarks`.

What is measured, each for both tools in alternating order and repeated (``--repeat N``, default 3):

- start: from the command's start until every worker is registered, for `clusterctl up` and for
  distributed's ``SSHCluster`` (in a python process of its own, until ``wait_for_workers`` returns),
  with the scheduler alone on h1 and 2 worker processes x 1 thread on each of 1, 2 and 4 worker hosts;
- stop: `clusterctl down` and ``SSHCluster.close()``, until the command returns and until no process of
  the cluster is left on any host (each host's network namespace is searched);
- `clusterctl status` (and `status --processes`) against a plain ``Client(...).scheduler_info()``;
- `clusterctl --help` against `dask --help`.

Results: a table on stdout, ``benchmarks/results/latest.json`` and ``latest.md``. See docs/benchmark.md.
"""
