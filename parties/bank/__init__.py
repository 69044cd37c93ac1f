"""The bank node (active party): holds labels and keys, orchestrates the federation."""
