"""The core of the desk: request kinds and clocks, the request service, audit, outbox."""
