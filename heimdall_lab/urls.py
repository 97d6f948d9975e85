"""One rule for credentials in URLs: they never reach a log, a message, a file or a notebook."""

from __future__ import annotations

import re

__all__ = ["mask_url"]

_KEY_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "adl")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|secret|token|access_key|secret_key|"
    r"aws_secret_access_key|sslpassword)=)[^&;#]*",
    re.IGNORECASE,
)


def mask_url(url: object) -> str:
    """Render a URL with any password, secret key or token replaced by ``***``.

    The user name is kept (``postgresql://heimdall:***@host/db``), except where the user part
    is itself a key (``s3://KEY:SECRET@bucket`` becomes ``s3://***@bucket``). Query
    parameters that carry secrets (``?password=``, ``&token=``, ...) are masked too. The user
    information runs to the last ``@``, so a password holding ``/`` or ``@`` is hidden whole;
    where a path after a ``host:port`` holds an ``@``, more is hidden than needed, never less.

    Parameters
    ----------
    url : object
        A URL, path or SQLAlchemy URL (anything ``str()`` renders).

    Returns
    -------
    str
        The URL, safe to log, show or store.

    Examples
    --------
    >>> mask_url("postgresql://heimdall:pw@db:5432/heimdall?sslpassword=x")
    'postgresql://heimdall:***@db:5432/heimdall?sslpassword=***'
    >>> mask_url("s3://AKIDEXAMPLE:secret@bucket/iq")
    's3://***@bucket/iq'
    """
    render = getattr(url, "render_as_string", None)
    text = render(hide_password=False) if render else str(url)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}***", _mask_userinfo(text))


def _mask_userinfo(text: str) -> str:
    # The user information runs to the last '@' (a password may hold '/', '?', '#' or '@'),
    # and it holds a secret when it has a ':'. Without '://' (a mistyped URL) the same holds.
    head, sep, rest = text.partition("://")
    if not sep:
        head, rest = "", text
    at = rest.rfind("@")
    if at < 0:
        return text
    userinfo, host = rest[:at], rest[at + 1 :]
    colon = userinfo.find(":")
    if colon < 0:
        return text  # user@host, or an '@' in a path: no secret
    if head.lower().startswith(_KEY_SCHEMES):
        return f"{head}{sep}***@{host}"  # s3://KEY:SECRET@bucket: the key is a secret too
    return f"{head}{sep}{userinfo[:colon]}:***@{host}"
