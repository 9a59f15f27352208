"""WebSub push subscriptions (W3C Recommendation, formerly PubSubHubbub): docs/websub.md.

A feed that names a hub is subscribed to; the hub then POSTs new content to our
callback, and that body goes through the same parse -> dedupe -> match -> publish path
as a polled one (:meth:`monitor.pipeline.Pipeline.receive`). The feed is still polled,
at ``[websub] fallback_interval``, so nothing is lost when a hub fails.

Modules:

``discovery``
    the hub and topic of a feed, from its ``Link`` headers, then from its document.
``signature``
    ``X-Hub-Signature`` checked against a subscription's secret (constant time).
``subscriptions``
    the :class:`Subscription` record, its states, and the Protocols of the store that keeps
    them (:class:`SubscriptionStore`) and of the client that talks to hubs (:class:`HubClient`).
``subscriber``
    :class:`Subscriber`: subscribe, verify, renew, unsubscribe, back-off.
``registry``
    :class:`Registry`: the subscriptions by feed and by token, what the poller and the
    status read of them (push interval, counts, each feed's push state).
``inbox``
    :class:`PushInbox`: pushes checked (token, signature), queued and handed to the pipeline.
``ratelimit``
    token buckets for the callback listener.
``refusals``
    :class:`RefusalLog`: a flood of refused verifications costs a log line a minute.

Core: no network library; the listener and the hub client are adapters
(:mod:`monitor.adapters.websub`), the store is :class:`monitor.adapters.store.Store`.
"""

from monitor.websub.discovery import PushLinks, discover, parse_link_header
from monitor.websub.inbox import PushInbox, PushVerdict
from monitor.websub.registry import Registry
from monitor.websub.signature import check_signature
from monitor.websub.subscriber import Subscriber
from monitor.websub.subscriptions import HubAnswer, HubClient, Subscription, SubscriptionStore

__all__ = [
    "HubAnswer",
    "HubClient",
    "PushInbox",
    "PushLinks",
    "PushVerdict",
    "Registry",
    "Subscriber",
    "Subscription",
    "SubscriptionStore",
    "check_signature",
    "discover",
    "parse_link_header",
]
