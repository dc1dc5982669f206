"""The engine: one call path (plan, look up, lease, compute, store, count) for every front-end."""
