"""One rule for credentials: they never reach a log, a message, a file or a notebook.

:func:`mask_url` renders one URL safe to show; :func:`redact` does the same for free text (an
error message, a log line) holding URLs, ``password=...`` pairs or secrets known by value.
:func:`split_credentials` takes the credentials out of a URL so they can be handed over some
other way (storage options, the environment); :func:`has_secret` and :func:`secrets_in` say
whether, and which, secrets a value holds. A masked URL (``***`` in place of the credentials)
means "the credentials come from the environment" wherever the package reads one back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

__all__ = [
    "MASK",
    "has_secret",
    "is_secret_name",
    "mask_url",
    "mask_values",
    "redact",
    "secrets_in",
    "split_credentials",
]

#: What a secret is replaced with.
MASK = "***"

_KEY_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "adl")
# Names of query parameters, options and ``name=value`` pairs that carry a secret: any name
# holding one of these words (over-masking is harmless, a missed secret is not).
_SECRET_WORDS = (
    r"pass(?:word|wd)|secret|token|signature|credential|api[-_]?key|access[-_]?key|"
    r"account[-_]?key|private[-_]?key"
)
_SECRET_NAME = re.compile(rf"^(?:key|sig|pwd|auth|.*(?:{_SECRET_WORDS}).*)$", re.IGNORECASE)
_QUERY_PAIR = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#?]+)=(?P<value>[^&;#]*)")
# In free text: a URL (up to whitespace or a quote), or a secret-named pair: ``password=x``,
# or a quoted value after a colon (``secret: 'x'``, ``"token": "x"``, as reprs and JSON have).
_QUOTED = r"'[^']*'|\"[^\"]*\""
_IN_TEXT = re.compile(
    r"(?P<url>[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+)"
    rf"|(?P<name>(?<![\w.-])(?P<q>['\"]?)[\w.-]*(?:{_SECRET_WORDS}|\bpwd\b)[\w.-]*(?P=q))"
    rf"(?P<sep>\s*=\s*(?={_QUOTED}|[^\s,;&'\")}}\]])|\s*:\s*(?={_QUOTED}))"
    rf"(?P<value>{_QUOTED}|[^\s,;&'\")}}\]]+)",
    re.IGNORECASE,
)


def is_secret_name(name: object) -> bool:
    """Whether a query parameter, option or field of this name carries a secret.

    Parameters
    ----------
    name : object
        The name (``password``, ``sslpassword``, ``secret``, ``aws_secret_access_key``,
        ``token``, ``X-Amz-Signature``, ``key``, ``sig``, ...).

    Returns
    -------
    bool
        True for names that hold a password, key, token or signature.

    Examples
    --------
    >>> is_secret_name("sslpassword"), is_secret_name("sslmode")
    (True, False)
    """
    return isinstance(name, str) and bool(_SECRET_NAME.match(name))


def _userinfo(text: str) -> tuple[str, str, str, str] | None:
    """``(head, sep, userinfo, host)`` of a URL holding an ``@``, else None.

    The user information runs to the last ``@`` (a password may hold ``/``, ``?``, ``#`` or
    ``@``). Without ``://`` (a mistyped URL) the same holds, with an empty head.
    """
    head, sep, rest = text.partition("://")
    if not sep:
        head, rest = "", text
    at = rest.rfind("@")
    if at < 0:
        return None
    return head, sep, rest[:at], rest[at + 1 :]


def mask_url(url: object) -> str:
    """Render a URL with any password, secret key or token replaced by ``***``.

    The user name is kept (``postgresql://heimdall:***@host/db``), except where the user part
    is itself a key (``s3://KEY:SECRET@bucket`` becomes ``s3://***@bucket``). Query
    parameters that carry secrets (``?password=``, ``&token=``, ``sslpassword``,
    ``X-Amz-Signature``, ... see :func:`is_secret_name`) are masked too. The user
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
    return _QUERY_PAIR.sub(_mask_pair, _mask_userinfo(text))


def _mask_pair(m: re.Match[str]) -> str:
    if not is_secret_name(m["name"]):
        return m[0]
    return f"{m['lead']}{m['name']}={MASK}"


def _mask_userinfo(text: str) -> str:
    parts = _userinfo(text)
    if parts is None:
        return text
    head, sep, userinfo, host = parts
    colon = userinfo.find(":")
    if colon < 0:
        return text  # user@host, or an '@' in a path: no secret
    if head.lower().startswith(_KEY_SCHEMES):
        return f"{head}{sep}{MASK}@{host}"  # s3://KEY:SECRET@bucket: the key is a secret too
    return f"{head}{sep}{userinfo[:colon]}:{MASK}@{host}"


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Take the user information out of a URL.

    Parameters
    ----------
    url : str
        A URL such as ``s3://KEY:SECRET@bucket/prefix``.

    Returns
    -------
    tuple of (str, str or None, str or None)
        The URL without its user information, then the user and the password
        (percent-decoded; None where absent). A masked URL gives ``"***"`` for the part
        masked: its credentials are to come from the environment.

    Examples
    --------
    >>> split_credentials("s3://KEY:SE%2FCRET@bucket/iq")
    ('s3://bucket/iq', 'KEY', 'SE/CRET')
    >>> split_credentials("s3://bucket/iq")
    ('s3://bucket/iq', None, None)
    """
    parts = _userinfo(url) if "://" in url else None
    if parts is None:
        return url, None, None
    head, sep, userinfo, host = parts
    user, colon, password = userinfo.partition(":")
    return f"{head}{sep}{host}", unquote(user), unquote(password) if colon else None


def secrets_in(value: object) -> list[str]:
    """The secrets a URL, or a mapping of options, holds, by value.

    Parameters
    ----------
    value : object
        A URL (its password, the key of an ``s3://KEY:SECRET@`` URL, secret query values),
        a mapping (values under secret names, see :func:`is_secret_name`, and the secrets of
        every value), or a list or tuple of those.

    Returns
    -------
    list of str
        Each secret as written and percent-decoded, longest first; pass them to
        :func:`redact` to mask them wherever they show up.
    """
    found: set[str] = set()
    if isinstance(value, str):
        parts = _userinfo(value)
        if parts is not None and ":" in parts[2]:
            user, _, password = parts[2].partition(":")
            found.add(password)
            if parts[0].lower().startswith(_KEY_SCHEMES):
                found.add(user)
        found.update(m["value"] for m in _QUERY_PAIR.finditer(value) if is_secret_name(m["name"]))
    elif isinstance(value, Mapping):
        for name, item in value.items():
            if is_secret_name(name) and isinstance(item, str):
                found.add(item)
            found.update(secrets_in(item))
    elif isinstance(value, list | tuple):
        for item in value:
            found.update(secrets_in(item))
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if s and s != MASK), key=lambda s: (-len(s), s))


def has_secret(value: object) -> bool:
    """Whether a value holds credentials, at any depth of lists, tuples and mappings.

    A value holds credentials when it is text that :func:`mask_url` or :func:`redact`
    changes, or a mapping with a non-empty secret-named entry (see :func:`is_secret_name`).

    Parameters
    ----------
    value : object
        Anything (a notebook parameter, for example).

    Returns
    -------
    bool
        True when writing the value down would write a secret.
    """
    if isinstance(value, str):
        return mask_url(value) != value or redact(value) != value
    if isinstance(value, Mapping):
        return any(
            (is_secret_name(k) and v not in (None, "")) or has_secret(v) for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return any(has_secret(v) for v in value)
    return False


def mask_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping of parameters as it may be shown or stored: each credential-holding text masked.

    Parameters
    ----------
    values : mapping of str to object
        Parameters (a notebook run's, for example).

    Returns
    -------
    dict
        The same keys; a text value holding credentials (:func:`has_secret`) becomes
        :func:`redact` of it, any other value is kept as it is.
    """
    return {k: redact(v) if isinstance(v, str) and has_secret(v) else v for k, v in values.items()}


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """Mask every credential in free text: an error message, a log line, a cell's output.

    Parameters
    ----------
    text : object
        The text (anything ``str()`` renders, an exception for example).
    secrets : iterable of str, optional
        Secrets known by value (see :func:`secrets_in`), masked wherever they appear, even
        outside a URL.

    Returns
    -------
    str
        The text with every URL masked as :func:`mask_url` does, every secret-named pair
        (``password=x``, ``secret: 'x'``, ``"token": "x"``; not ``password: x``, which is
        prose as often as not) masked, and every given secret replaced by ``***``.

    Examples
    --------
    >>> redact("cannot reach s3://KEY:SECRET@bucket/iq (password=pw)")
    'cannot reach s3://***@bucket/iq (password=***)'
    >>> redact("login as heimdall with hunter2", secrets=["hunter2"])
    'login as heimdall with ***'
    """
    out = _IN_TEXT.sub(_redact_match, str(text))
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def _redact_match(m: re.Match[str]) -> str:
    if m["url"] is not None:
        return mask_url(m["url"])
    return f"{m['name']}{m['sep']}{MASK}"
