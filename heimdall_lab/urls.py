"""One rule for credentials in URLs: they never reach a log, a message, a file or a notebook."""

from __future__ import annotations

import re

__all__ = ["mask_url"]

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:?#]*)(?::[^/@?#]*)?@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|secret|token|access_key|secret_key|"
    r"aws_secret_access_key|sslpassword)=)[^&;#]*",
    re.IGNORECASE,
)


def mask_url(url: object) -> str:
    """Render a URL with any password, secret key or token replaced by ``***``.

    The user name is kept (``postgresql://heimdall:***@host/db``), except where the user part
    is itself a key (``s3://KEY:SECRET@bucket`` becomes ``s3://***@bucket``). Query
    parameters that carry secrets (``?password=``, ``&token=``, ...) are masked too.

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
    text = (
        url.render_as_string(hide_password=False) if hasattr(url, "render_as_string") else str(url)
    )

    def userinfo(m: re.Match[str]) -> str:
        scheme, user = m["scheme"], m["user"]
        if scheme.lower().startswith(("s3", "gs", "az", "abfs")):
            return f"{scheme}***@"
        return f"{scheme}{user}:***@" if ":" in m.group(0)[len(scheme) :] else f"{scheme}{user}@"

    text = _USERINFO.sub(userinfo, text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}***", text)
