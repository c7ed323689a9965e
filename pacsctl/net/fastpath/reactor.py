"""A race in pynetdicom's association reactor: a response lost to the reactor.

`Association.send_c_store()` (and the other send_*) pause the reactor by clearing its
checkpoint and waiting until the reactor says it is paused, then send and wait for the
response. The reactor says so before it looks at the checkpoint: when it has just passed it,
the sender sees "paused" and sends, and the reactor, when it runs again, takes the response
off the queue, logs "Received unexpected C-STORE service message" and drops it; the sender
waits for the DIMSE timeout and aborts. On a loaded machine a thread waits long for the GIL
between those two steps (seen: `scu.store` runs failing after 30 s with "association lost").

The remedy: a response the reactor takes while a sender is waiting (its checkpoint cleared)
goes back on the queue for that sender; the reactor then stops at the checkpoint.
"""

from __future__ import annotations

from typing import Any

from pynetdicom.association import Association

_original_serve_request = Association._serve_request


def _serve_request(self: Association, msg: Any, context_id: int) -> None:
    if getattr(msg, "is_valid_response", False) and not self._reactor_checkpoint.is_set():
        self.dimse.msg_queue.put((context_id, msg))  # for the send_*() waiting for it
        return
    _original_serve_request(self, msg, context_id)


# What `pacsctl.net.fastpath.install` swaps in: (owner, attribute, replacement).
PATCHES = ((Association, "_serve_request", _serve_request),)
USES = ((Association, ("_reactor_checkpoint", "dimse")),)
