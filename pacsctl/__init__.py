"""pacsctl: a command-line toolkit to run and look after a PACS archive."""

__version__ = "0.1.0"
