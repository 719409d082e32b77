"""Customs risk results: feeds that load them ahead of arrival (:mod:`.feeds`, formats in
:mod:`.records`), and the in-memory book the policy reads at scan time (:mod:`.book`).

The package itself imports nothing, so a site's registration and schema (:mod:`.settings`,
:mod:`.registration`) load without the book's numpy columns.
"""
