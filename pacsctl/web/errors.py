"""Errors the DICOMweb side answers with: an HTTP status and a JSON body `{"error", "hint"}`."""

from __future__ import annotations


class WebError(Exception):
    """A request that cannot be served; `status` is its HTTP status code."""

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        out = {"error": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


def not_found(what: str) -> WebError:
    """404: absent, or outside the token's scope (the two are not told apart)."""
    return WebError(404, f"{what} not found")
