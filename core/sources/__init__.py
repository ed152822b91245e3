"""The model seam (source.py) and the one input generator (feeds.py)."""
