"""The coordinator: owns a run, dispatches ready steps to executor queues, collects results."""
