"""PNG renders of clouds, retrieval results and training curves (matplotlib Agg)."""
