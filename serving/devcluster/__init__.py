"""Development cluster tooling: a multi-node Ray cluster on one machine (nodes; one node:
ray_node), its Redis (local_redis), the chart's application on it (chart), `make cluster`
(__main__); shared by the cluster tests and the cluster bench."""
