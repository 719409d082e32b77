"""The durable audit store: the local SQLite journal, its reader, and the central forwarder."""
