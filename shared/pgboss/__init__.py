"""A Python client of pg-boss 12's tables: the queue the Node app and this package share."""
