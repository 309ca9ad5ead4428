"""`posters candidates`."""
