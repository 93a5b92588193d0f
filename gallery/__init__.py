"""The curated model gallery (data)."""
