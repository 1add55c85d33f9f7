"""Step queues: where the coordinator puts ready steps, one per executor key."""
