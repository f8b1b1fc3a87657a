"""Invoke task collections, one module each; `tasks.py` at the top level assembles them."""
