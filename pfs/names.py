"""What a file name may be: the one rule shared by the client and the metaserver, and how names
are quoted back."""

MAX_NAME_BYTES = 255
#: Characters of a client's string quoted back in a message or log line.
QUOTE_CHARS = 60


def brief(text: object) -> str:
    """`text` quoted for a message, cut short: a client's long string must not make the error
    that quotes it too large to send."""
    quoted = repr(text)
    return quoted if len(quoted) <= QUOTE_CHARS else quoted[:QUOTE_CHARS - 4] + "...'"


def name_problem(name: object) -> str | None:
    """Why `name` is not a valid PFS file name, or None when it is."""
    if not isinstance(name, str):
        return f"a file name must be a str, not {type(name).__name__}"
    if not name:
        return "a file name must not be empty"
    if name in (".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\0" in name:
        return "a file name must not contain '/' or NUL"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "a file name must be valid UTF-8"
    if len(encoded) > MAX_NAME_BYTES:
        return f"a file name is at most {MAX_NAME_BYTES} bytes of UTF-8 (this one has {len(encoded)})"
    return None
