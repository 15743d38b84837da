"""Toy Story GPT: eight character-level language models, each adding one idea of the GPT recipe."""
