"""Helpers for the digital twin's tests: small sites and scenarios written as real files."""
