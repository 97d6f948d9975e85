"""Identifiers: capture ids and receiver names, the one rule for each.

Both become parts of object keys, file names and database keys, so one rule serves all of
them: letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit, never ``..``.
"""

from __future__ import annotations

import re
import uuid

from heimdall_lab.errors import ValidationError

__all__ = ["check_capture_id", "check_receiver_name", "is_capture_id", "new_capture_id"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: Longest receiver name.
MAX_RECEIVER_NAME = 64
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_RECEIVER_NAME - 1}}}$")
#: Characters of a rejected name quoted in the message.
_QUOTED = 40


def new_capture_id() -> str:
    """A fresh capture id: 32 lower-case hex digits (a random UUID).

    Returns
    -------
    str
        The id.
    """
    return uuid.uuid4().hex


def check_capture_id(capture_id: object) -> str:
    """Check a capture id: safe as one object-key, file-name and database-key component.

    Parameters
    ----------
    capture_id : str
        1-128 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit, with
        no ``..`` (``"my-run-1"`` and UUID hex both qualify).

    Returns
    -------
    str
        The id.

    Raises
    ------
    ValidationError
        If it is not (it could escape the capture prefix, e.g. ``../x`` or ``a/b``).
    """
    if not isinstance(capture_id, str) or not _ID.match(capture_id) or ".." in capture_id:
        raise ValidationError(
            f"capture id {str(capture_id)[:80]!r} must be 1-128 letters, digits, '_', '.' or "
            "'-', starting with a letter or digit and without '..'"
        )
    return capture_id


def check_receiver_name(name: object) -> str:
    """Check a receiver name: safe in object keys, file names and the database.

    Parameters
    ----------
    name : str
        1-64 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit, with no
        ``..``.

    Returns
    -------
    str
        The name.

    Raises
    ------
    ValidationError
        If it is not.
    """
    rule = f"1-{MAX_RECEIVER_NAME} letters, digits, '_', '.' or '-'"
    if isinstance(name, str) and len(name) > MAX_RECEIVER_NAME:
        raise ValidationError(
            f"receiver name '{name[:_QUOTED]}...' is {len(name)} characters long; give {rule}"
        )
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValidationError(
            f"receiver name {str(name)[:_QUOTED]!r} must be {rule}, "
            "starting with a letter or digit and without '..'"
        )
    return name


def is_capture_id(value: object) -> bool:
    """Whether a value passes :func:`check_capture_id` (for filtering listings).

    Parameters
    ----------
    value : object
        Anything.

    Returns
    -------
    bool
        True for a valid capture id.
    """
    return isinstance(value, str) and bool(_ID.match(value)) and ".." not in value
