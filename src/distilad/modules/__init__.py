"""Training modules shared by several methods."""
