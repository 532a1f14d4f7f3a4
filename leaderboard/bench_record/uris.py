"""URIs as results files and pages show them: without the credentials a tracking or storage URI may carry."""

from __future__ import annotations


def redact(uri: str) -> str:
    """`uri` without its user and password (`https://user:token@host/x` -> `https://host/x`)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
