"""`posters index` and the faiss parts the other stages share."""
