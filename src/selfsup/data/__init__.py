"""Data: read raw files or hub data sets and turn them into cached, memory-mapped examples."""
