"""Sorter adapters: each implements `controller.core.ports.SorterPort` for one kind of PLC link."""
