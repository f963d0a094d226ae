"""Backbones: encoders that map a batch to every layer's hidden states (text: transformers configs)."""
