"""`NamespacedCluster`: a `LocalCluster` whose nodes each run in their own network
namespace of a `NamespaceNetwork`, so that the network between them can be partitioned."""

from __future__ import annotations

import os
from typing import Any

from runtime.cluster import LocalCluster
from runtime.jepsen.netns import NamespaceNetwork

__all__ = ["NamespacedCluster"]


class NamespacedCluster(LocalCluster):
    """Node `n<i>` runs under `ip netns exec` in `network`'s namespace for it, with Raft and
    HTTP on its namespace address (`NamespaceNetwork.RAFT_PORT`/`HTTP_PORT`). The HTTP
    helpers of `LocalCluster` keep working from the root namespace over the client links,
    which partitions never cut. Raft runs over plain TCP (`--insecure`): the namespaces are
    private to this machine and made by the test."""

    def __init__(self, base_dir: str | os.PathLike[str], network: NamespaceNetwork, **options: Any) -> None:
        super().__init__(base_dir, len(network.ids), **options)
        if self.ids != network.ids:
            raise ValueError(f"node ids {self.ids} differ from the network's {network.ids}")
        if self.tls:
            raise ValueError("NamespacedCluster runs plain TCP between its namespaces")
        self.network = network
        self.raft_addresses = {nid: f"{network.addresses[nid]}:{network.RAFT_PORT}" for nid in self.ids}
        self.http_addresses = {nid: f"{network.addresses[nid]}:{network.HTTP_PORT}" for nid in self.ids}

    def command(self, node_id: str) -> list[str]:
        return ["ip", "netns", "exec", self.network.namespaces[node_id], *super().command(node_id), "--insecure"]
