"""This folder's modules import faiss before `pipelines.index` (imports sorted): the stage's package goes first, so
faiss loads with the OpenMP wait policy it sets, as in the stage itself."""
import pipelines.index  # noqa: F401
