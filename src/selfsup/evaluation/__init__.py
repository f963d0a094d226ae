"""Evaluation of pretrained encoders: frozen-feature probes of image encoders (logistic regression, cosine
kNN), SUPERB-style probes of speech upstreams (`superb.py`: learned layer weights, utterance / frame / CTC
heads, the log-mel and random-init references), and the `selfsup evaluate` verb (also for fine-tuned
models)."""
