"""Dataset runs: the runner, shards, records, writes, merge, summary, manifest, failures, output locations,
loading (background thread, worker processes), two images in flight, and ranks."""
