"""The ``v1-sync-helper`` command line: the top layer, wiring every subcommand.

It imports the process packages (``bridge``, ``tasks``), the operator commands and
registers the dev-only ``dev`` command; nothing imports it.
"""

__version__ = "0.1.0"
