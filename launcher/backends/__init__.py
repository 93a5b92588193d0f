"""Inference backends; each one is imported only inside its worker process."""
