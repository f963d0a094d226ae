"""Evaluation of pretrained image encoders: frozen-feature probes (logistic regression, cosine kNN), collapse
diagnostics, and the `selfsup evaluate` verb."""
