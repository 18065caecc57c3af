"""The origin: the tree the publisher writes and any static server serves."""
