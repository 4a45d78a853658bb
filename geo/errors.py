"""Errors that name the file or object at fault and the cause, for people rather than stack traces."""

from __future__ import annotations


class FootprintsError(Exception):
    """Base of every error the project raises on purpose.

    Args:
        source: The file, object URI or other thing at fault, as a person would name it.
        cause: What is wrong with it, in words.
    """

    def __init__(self, source: str, cause: str) -> None:
        super().__init__(f"{source}: {cause}")
        self.source = source
        self.cause = cause


class InputError(FootprintsError):
    """A file's content is unusable: a corrupt raster, a raster without a CRS, labels that are not GeoJSON."""


class StoreError(FootprintsError):
    """An object store could not give what was asked: a missing object, refused credentials, no connection."""


class PartialRunError(FootprintsError):
    """A run that could not read all of its AOI: what it read is written, and it ends as failed."""


def first_line(error: BaseException) -> str:
    """The first line of a library's exception text: enough to say why, short enough to read."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
