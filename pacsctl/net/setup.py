"""Process-wide pynetdicom settings pacsctl relies on; imported by every `net` module.

pynetdicom keeps these in module globals, so they are set once here, on import.
"""

from __future__ import annotations

import logging

from pynetdicom import _config

# Patient names and IDs must never reach a log: pynetdicom's default handlers dump DIMSE
# messages and C-FIND/MOVE/GET identifiers at INFO level.
_config.LOG_HANDLER_LEVEL = "none"
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

# Stream received C-STORE data sets straight to a file instead of holding them in memory; the
# archive then keeps those exact bytes (no decode / re-encode).
_config.STORE_RECV_CHUNKED_DATASET = True

# Accept every storage SOP class, known, retired or private, in the first transfer syntax the
# peer proposes for it: whatever arrives can be stored as received.
_config.UNRESTRICTED_STORAGE_SERVICE = True

# Send data sets from files in PDU-sized chunks when the stored syntax was accepted.
_config.STORE_SEND_CHUNKED_DATASET = True

# pynetdicom is chatty at INFO (one line per PDU/DIMSE event); keep it to warnings unless the
# CLI asks for --debug by lowering this logger itself.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)
