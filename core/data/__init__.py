"""Data sets: CSV tables and the built-in data."""
