"""What a serving process keeps of the graphs: the catalog snapshot, each model version's graph (memory-mapped
from its graph file) and the kernel cache (``graph_cache.GraphCache``). Above ``kb.db`` (it reads from there),
below the domain packages and the adapters that serve from it."""
