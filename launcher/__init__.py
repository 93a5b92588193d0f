"""The OpenAI-compatible server, its worker processes and their backends."""
