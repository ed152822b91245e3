"""Optimisers with their own slot Variables, and the lecture's learning rules."""
