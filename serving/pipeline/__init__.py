"""The request pipeline, transport-free: per model what it serves (runtime), the bound on requests
in flight (in_flight), the vector cache (cache), dense embeddings (embed), reranking (reranking),
sparse vectors (sparse) and which task a model serves (tasks)."""
