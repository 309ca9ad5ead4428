"""`posters bench`."""
