"""Associations kept open across studies: a migration asks the same two nodes thousands of
questions, and each association set-up costs more (~25 ms) than a C-FIND on it. A session
opens on first use and again after it broke (or the peer closed it while idle)."""

from __future__ import annotations

from contextlib import ExitStack

from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from pacsctl.net import scu
from pacsctl.net.cancel import Cancellation
from pacsctl.net.types import NodeLike


class Session:
    """One association to `node` with `contexts`, opened lazily."""

    def __init__(
        self,
        node: NodeLike,
        contexts: list[PresentationContext],
        calling_aet: str,
        timeout: float = 30.0,
        cancel: Cancellation | None = None,
    ) -> None:
        self.node, self.contexts, self.calling_aet = node, contexts, calling_aet
        self.timeout, self.cancel = timeout, cancel
        self._stack: ExitStack | None = None
        self._assoc: Association | None = None

    def assoc(self) -> Association:
        """The open association (opened now if there is none or it broke). Raises NetworkError."""
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        self.close()
        stack = ExitStack()
        self._assoc = stack.enter_context(
            scu.associate(
                self.node, self.contexts, self.calling_aet, timeout=self.timeout, cancel=self.cancel
            )
        )
        self._stack = stack
        return self._assoc

    def discard(self) -> None:
        """After a failure on it: abort the association; the next use opens a new one."""
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.abort()
        self.close()

    def close(self) -> None:
        """Release the association (if open)."""
        stack, self._stack, self._assoc = self._stack, None, None
        if stack is not None:
            try:
                stack.close()
            except Exception:  # a peer that dropped us while idle: nothing left to release
                pass
