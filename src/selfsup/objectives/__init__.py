"""Objectives: one file per self-supervised method — its head(s), its pretext call and its loss."""
