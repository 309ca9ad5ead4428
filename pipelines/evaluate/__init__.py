"""`posters evaluate`: what the embeddings and the candidates are worth, offline, with a report people look at."""
