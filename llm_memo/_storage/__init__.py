"""Storage: the tiers, their chain (Cache), leases, events and the savings ledger."""
