"""The delivery stage: from a match to a record acknowledged by Kafka.

:mod:`monitor.delivery.records`  the alert contract: Alert from Match, the JSON and CloudEvents record
:mod:`monitor.delivery.outbox`   the durable outbox drained into Kafka: order, retries, back-pressure
:mod:`monitor.delivery.sender`   one record sent: its topic, the outcome, the broker's health and counters
:mod:`monitor.delivery.dead_letters`  records Kafka rejects for good, on the dead-letter topic
"""

from monitor.delivery.outbox import Delivery, OutboxStore
from monitor.delivery.sender import DeliveryStats, Publisher

__all__ = ["Delivery", "DeliveryStats", "OutboxStore", "Publisher"]
