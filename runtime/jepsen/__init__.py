"""A Jepsen-style test of the real thing: `raftfsm node` processes, concurrent HTTP clients,
a nemesis that kills, pauses and partitions nodes, and the linearizability checker
(runtime/linearizability.py) on the recorded history.

- `netns`: one Linux network namespace per node, a partitionable link per pair of nodes;
- `cluster`: `NamespacedCluster`, a `LocalCluster` whose nodes run in those namespaces;
- `workload`: the client threads and how HTTP answers become outcomes;
- `nemesis`: the seeded faults;
- `harness`: `run(Config(...), directory)` puts it all together and returns a `Report`.

`python -m runtime.jepsen --help` runs it from the command line; tests/test_jepsen.py runs
a short version in `make test` and longer ones with `pytest --long` (`make jepsen`).
"""

from __future__ import annotations

from runtime.jepsen.harness import Config, Report, run

__all__ = ["Config", "Report", "run"]
