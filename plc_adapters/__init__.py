"""Sorter adapters: each implements `controller.ports.SorterPort` for one kind of PLC link."""
