"""Dataset runs: the runner, its records, manifest, failures, output locations, worker processes and ranks."""
