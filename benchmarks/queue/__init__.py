"""Rollout queue throughput: push -> worker (instant scorer) -> trainer pull, vs raw XADD."""
