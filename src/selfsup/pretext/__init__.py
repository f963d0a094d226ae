"""Pretext tasks: pure functions (example, rng) -> (inputs, targets) that make the self-supervision."""
