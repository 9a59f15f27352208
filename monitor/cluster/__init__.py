"""Scale-out on Kafka (docs/scaling.md): what pollers and matchers agree on.

Pure code, no Kafka client: the roles a process can take (:mod:`.roles`), which partition
a feed belongs to (:mod:`.sharding`), the records of the cluster's compacted topics
(:mod:`.records`), what a matcher remembers of an article on ``news.matcher-state``
(:mod:`.matcher_state`), what ``feeds sync`` writes (:mod:`.sync`) and ``backtest``'s
matching over a span of the articles topic (:mod:`.backtest`). The Kafka side (reading a
partition to its end, the group consumers)
lives in :mod:`monitor.adapters`, the roles themselves in :mod:`monitor.app`.
"""

from monitor.cluster.matcher_state import MatcherStateError, RememberedArticle, state_from_record, state_to_record
from monitor.cluster.records import MARKER_KEY, FeedRecordError, feed_from_record, feed_to_record, is_marker
from monitor.cluster.roles import ROLES, parse_roles
from monitor.cluster.sharding import feed_partition, misplaced, shard_key

__all__ = [
    "MARKER_KEY",
    "ROLES",
    "FeedRecordError",
    "MatcherStateError",
    "RememberedArticle",
    "feed_from_record",
    "feed_partition",
    "feed_to_record",
    "is_marker",
    "misplaced",
    "parse_roles",
    "shard_key",
    "state_from_record",
    "state_to_record",
]
