"""The controller's read-only face for SCADA: an optional OPC UA server publishing the site's
read model (:class:`~controller.core.views.SiteView`) as typed variables under stable node ids.

:mod:`controller.scada.settings` and :mod:`controller.scada.points` load no OPC UA library
(the site schema imports the settings); only :mod:`controller.scada.opcua` does.
"""
