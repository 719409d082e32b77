"""The floor console: the HTTP API, the pages, the live stream and ``/metrics``, served by
the controller's own event loop (see :mod:`controller.console.app`)."""
