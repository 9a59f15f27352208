"""Story signals: bursts and spikes of a rule's matches, and escalations of a story (docs/signals.md).

:mod:`monitor.signals.outlet`  the outlet of an article (registrable domain, by the bundled Public Suffix List)
:mod:`monitor.signals.detect`  the detectors of one rule and of stories, their state as JSON
:mod:`monitor.signals.keeper`  every rule's and story's detectors, the journal and checkpoints, the charts
:mod:`monitor.signals.feed`    sightings from an admitted batch (the daemon), from sighting and alert records (the consumer)

A core package: pure, no clock of its own, no Kafka, SQLite or network. The daemon feeds
it in :mod:`monitor.matching`; ``news-monitor signals`` (:mod:`monitor.app.signals`)
feeds it from the matchers' sightings when matching runs in several processes.
"""

from monitor.signals.detect import Sighting, event_time
from monitor.signals.keeper import Chart, Signals
from monitor.signals.outlet import outlet_of

__all__ = ["Chart", "Sighting", "Signals", "event_time", "outlet_of"]
