"""URL checking for `MetadataValue.url`: the WHATWG rules rivers applies, for the common cases.

Special schemes (http, https, ws, wss, ftp, file) get a host, a path and their default port dropped,
as a browser would write them (`HTTP://Example.COM` -> `http://example.com/`); other schemes
(`s3://bucket/key`, `mailto:`) are kept as written. Failures raise `InvalidMetadataError` with
rivers' wording (`Invalid URL: relative URL without a base`).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from rivers.exceptions import InvalidMetadataError

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "file": None}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.*)", re.DOTALL)
_FORBIDDEN_HOST = set(" #%/:<>?@[\\]^|")
_PATH_SAFE = "/%!$&'()*+,;=:@-._~[]"  # quote() encodes everything else (spaces, quotes, non-ASCII)
_QUERY_SAFE = _PATH_SAFE + "?{}`|^\\"


def normalize_url(text: str) -> str:
    """`text` as rivers stores it, or `InvalidMetadataError` naming why it is not a URL."""
    text = re.sub(r"[\t\n\r]", "", text).strip("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f"
                                                "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f ")
    match = _SCHEME.fullmatch(text)
    if match is None:
        raise InvalidMetadataError("Invalid URL: relative URL without a base")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in DEFAULT_PORTS:
        return f"{scheme}:{rest}"
    rest = rest.replace("\\", "/")
    if scheme == "file":
        authority, tail = _split_authority(rest[2:]) if rest.startswith("//") else ("", rest)
        return f"file://{_host(authority) if authority else ''}{_path_query_fragment(tail)}"
    authority, tail = _split_authority(rest.lstrip("/"))
    userinfo, _, hostport = authority.rpartition("@")
    host, port = _split_port(hostport)
    port_text = _port(scheme, port)
    user = f"{userinfo}@" if userinfo else ""
    return f"{scheme}://{user}{_host(host)}{port_text}{_path_query_fragment(tail)}"


def _split_authority(rest: str) -> tuple[str, str]:
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    return rest[:end], rest[end:]


def _split_port(hostport: str) -> tuple[str, str | None]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise InvalidMetadataError("Invalid URL: invalid IPv6 address")
        host, after = hostport[: close + 1], hostport[close + 1:]
        return host, after[1:] if after.startswith(":") else None
    host, colon, port = hostport.partition(":")
    return host, port if colon else None


def _port(scheme: str, port: str | None) -> str:
    if not port:
        return ""
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise InvalidMetadataError("Invalid URL: invalid port number")
    return "" if int(port) == DEFAULT_PORTS[scheme] else f":{int(port)}"


def _host(host: str) -> str:
    if not host:
        raise InvalidMetadataError("Invalid URL: empty host")
    if host.startswith("["):
        return host.lower()
    host = unquote(host)
    try:
        ascii_host = host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()
    except UnicodeError:
        raise InvalidMetadataError("Invalid URL: invalid international domain name") from None
    if " " in ascii_host:
        raise InvalidMetadataError("Invalid URL: invalid international domain name")
    if any(c in _FORBIDDEN_HOST or ord(c) < 0x20 for c in ascii_host):
        raise InvalidMetadataError("Invalid URL: invalid domain character")
    labels = ascii_host.split(".")
    last = labels[-1] or (labels[-2] if len(labels) > 1 else "")
    return _ipv4(ascii_host) if _numeric(last) else ascii_host


def _numeric(label: str) -> bool:
    return label.isdigit() or bool(re.fullmatch(r"0[xX][0-9a-fA-F]*", label))


def _ipv4(host: str) -> str:
    """The WHATWG IPv4 parser: `1.2.3` is `1.2.0.3`, parts may be hex (0x) or octal (leading 0)."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    numbers: list[int] = []
    for part in parts:
        if len(parts) > 4 or not part:
            raise InvalidMetadataError("Invalid URL: invalid IPv4 address")
        base, digits = (16, part[2:]) if part[:2].lower() == "0x" else (8, part[1:]) if len(part) > 1 and \
            part[0] == "0" else (10, part)
        try:
            numbers.append(int(digits, base) if digits else 0)
        except ValueError:
            raise InvalidMetadataError("Invalid URL: invalid IPv4 address") from None
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise InvalidMetadataError("Invalid URL: invalid IPv4 address")
    address = numbers[-1] + sum(n * 256 ** (3 - i) for i, n in enumerate(numbers[:-1]))
    return ".".join(str((address >> shift) & 255) for shift in (24, 16, 8, 0))


def _resolve_dots(path: str) -> str:
    """`/a/./b/../c` -> `/a/c`; empty segments stay (`//a`), a final `.` or `..` leaves a slash."""
    segments = (path[1:] if path.startswith("/") else path).split("/")
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")
    return "/" + "/".join(kept)


def _path_query_fragment(tail: str) -> str:
    rest, hash_, fragment = tail.partition("#")
    path, question, query = rest.partition("?")
    out = quote(_resolve_dots(path), safe=_PATH_SAFE)
    if question:
        out += "?" + quote(query, safe=_QUERY_SAFE)
    if hash_:
        out += "#" + quote(fragment, safe=_QUERY_SAFE + "#")
    return out
