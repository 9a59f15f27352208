"""Adapters at the edges: HTTP, Kafka, SQLite, the embedded broker, the file watcher.

Only modules in this package touch the network, the broker or the disk.
"""
