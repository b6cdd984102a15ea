"""The durable stores a run reads and writes: id mappings, sync state, key leases, dead letters."""
