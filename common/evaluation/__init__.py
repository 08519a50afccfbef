"""Held-out quality: MCD-DTW, alignment."""
