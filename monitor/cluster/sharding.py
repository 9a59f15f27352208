"""Which partition of the feeds topic a feed belongs to.

Feeds are sharded by host: every feed of one host lands in one partition, so one poller
polls them all and its per-host limit (``[feeds] per_host``) holds across the cluster.
The hash is CRC-32 (stable across processes, versions and machines, unlike ``hash()``).
The feed-state topic uses the same partition for a feed, so the poller that owns a feed
also reads its state from the partitions it was given.
"""

from __future__ import annotations

import zlib
from urllib.parse import urlsplit

__all__ = ["feed_partition", "misplaced", "shard_key"]


def shard_key(url: str) -> str:
    """What a feed is sharded by: its lower-case host, or the whole location when it has
    none (a file path)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    return host or url


def feed_partition(url: str, partitions: int) -> int:
    """The partition (0 to ``partitions - 1``) of the feed at ``url``."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return zlib.crc32(shard_key(url).encode("utf-8", "surrogatepass")) % partitions


def misplaced(key: bytes | None, partition: int, partitions: int) -> str | None:
    """Why a record of a feed's ``key`` (its URL) found in ``partition`` is not its feed's
    (another than :func:`feed_partition` gives: a producer with another partitioner, or a
    topic whose partitions were added since), or None when it is in place (or has no key)."""
    if not key:
        return None
    url = key.decode("utf-8", "replace")
    expected = feed_partition(url, partitions)
    if expected == partition:
        return None
    return (
        f"in partition {partition}, but its host's partition is {expected} of {partitions}"
        " (not written by 'news-monitor feeds sync', or before partitions were added)"
    )
