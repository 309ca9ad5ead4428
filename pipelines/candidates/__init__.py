"""`posters candidates`."""
import pipelines.index  # noqa: F401 — faiss' OpenMP wait policy, set before this package imports faiss
