"""The delivery stage: from a match to a record acknowledged by Kafka.

:mod:`monitor.delivery.records`  the alert contract: Alert from Match, the JSON and CloudEvents record
:mod:`monitor.delivery.outbox`   the durable outbox drained into Kafka: retries, back-pressure
"""

from monitor.delivery.outbox import Delivery, DeliveryStats, Publisher

__all__ = ["Delivery", "DeliveryStats", "Publisher"]
