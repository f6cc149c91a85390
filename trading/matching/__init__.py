"""The matcher, the single writer of the books: one module per job (see each module)."""
