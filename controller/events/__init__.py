"""Events out of the site: the journal, alarms, lane states and KPIs on an MQTT broker.

:mod:`controller.events.settings` is the site file's ``events`` section,
:mod:`controller.events.topics` the topic layout and payloads (docs/events.md),
:mod:`controller.events.progress` the publisher's durable place in the journal and
:mod:`controller.events.mqtt` the publisher itself.
"""
