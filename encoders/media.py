"""Fetching media bytes for an item safely: inline base64 or a URI, under a policy.

Everything a producer can point us at is untrusted: the policy limits which URI schemes,
directories and hosts may be read, how many bytes, how long a download may take, and the
content must look like the modality it claims to be. Every refusal is a ``MediaError``
whose ``reason`` is a short code (counted, and put on the dead letter) and whose message
says what to change.
"""

from __future__ import annotations

import base64
import binascii
import errno
import ipaddress
import os
import socket
import stat
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import idna


class MediaError(ValueError):
    """Media that cannot be used; ``reason`` is one of the ``media-*`` codes below."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


DISALLOWED = "media-disallowed-uri"
UNREACHABLE = "media-unreachable"
OVERSIZED = "media-oversized"
CORRUPT = "media-corrupt"
UNSUPPORTED = "media-unsupported-format"
MISLABELLED = "media-mislabelled"

#: Leading bytes of the formats we decode, by the format name we report.
_SIGNATURES: dict[str, tuple[str, Sequence[bytes]]] = {
    "png": ("image", (b"\x89PNG\r\n\x1a\n",)),
    "jpeg": ("image", (b"\xff\xd8\xff",)),
    "gif": ("image", (b"GIF87a", b"GIF89a")),
    "webp": ("image", (b"RIFF",)),  # confirmed by "WEBP" at byte 8 below
    "bmp": ("image", (b"BM",)),
    "wav": ("audio", (b"RIFF",)),  # confirmed by "WAVE" at byte 8 below
    "flac": ("audio", (b"fLaC",)),
    "ogg": ("audio", (b"OggS",)),
    "mp3": ("audio", (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xfa")),
}


def sniff_format(data: bytes) -> tuple[str, str] | None:
    """(modality, format) from the leading bytes, or None for anything else.

    >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n...")
    ('image', 'png')
    >>> sniff_format(b"RIFF\\x00\\x00\\x00\\x00WAVEfmt ")
    ('audio', 'wav')
    >>> sniff_format(b"<html>") is None
    True
    """
    for name, (modality, prefixes) in _SIGNATURES.items():
        if not data.startswith(tuple(prefixes)):
            continue
        if prefixes == (b"RIFF",) and data[8:12] != {"webp": b"WEBP", "wav": b"WAVE"}[name]:
            continue
        return modality, name
    return None


@dataclass(frozen=True)
class MediaPolicy:
    """What a worker may read, and how much.

    ``allowed_dirs`` are the only directories ``file://`` URIs may point into (none by
    default: file access is opt-in). ``allowed_hosts`` restricts http(s) to those host
    names when not empty; addresses that resolve to loopback, private, link-local or
    reserved networks are refused unless ``allow_private_hosts`` (for a media server on
    the same network), so a URI cannot reach cloud metadata or internal services.
    """

    max_bytes: int = 20_000_000
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 600.0
    #: Header fields a decoder or resampler sizes its buffers from, bounded before decoding.
    max_image_side: int = 20_000
    min_audio_sample_rate: int = 1_000
    max_audio_sample_rate: int = 192_000
    max_audio_channels: int = 16
    allowed_schemes: Sequence[str] = ("data", "file", "http", "https")
    allowed_dirs: Sequence[Path] = ()
    allowed_hosts: Sequence[str] = ()
    allow_private_hosts: bool = False
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    user_agent: str = "streamrec-media-fetcher"
    _resolved_dirs: tuple[Path, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        resolved = tuple(Path(d).resolve() for d in self.allowed_dirs)
        object.__setattr__(self, "_resolved_dirs", resolved)


#: IPv6 prefixes whose last 32 bits are an IPv4 address a gateway or the host reaches:
#: NAT64's well-known and local-use prefixes, and the deprecated IPv4-compatible form.
_IPV4_CARRIERS = tuple(
    ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96")
)


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` and every IPv4 address it carries (mapped, 6to4, NAT64,
    IPv4-compatible) are global: ``64:ff9b::a9fe:a9fe`` reaches 169.254.169.254
    through a NAT64 gateway though Python calls it global.

    >>> is_public(ipaddress.ip_address("93.184.216.34"))
    True
    >>> [is_public(ipaddress.ip_address(a)) for a in ("127.0.0.1", "64:ff9b::a9fe:a9fe",
    ...                                                "2002:a00:1::", "::ffff:10.0.0.1")]
    [False, False, False, False]
    """
    if not address.is_global:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return True
    carried = [address.ipv4_mapped, address.sixtofour]
    carried += [
        ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        for network in _IPV4_CARRIERS
        if address in network
    ]
    return all(v4 is None or v4.is_global for v4 in carried)


def _pinned(
    parsed: urllib.parse.SplitResult, host: str, port: int | None, address: str
) -> tuple[str, str, str]:
    """The URL with its host replaced by ``address``, and the name for the ``Host``
    header and TLS's SNI (IDNA-encoded; an IPv6 literal in brackets)."""
    literal = ipaddress.ip_address(address.split("%")[0])
    at = f"[{literal}]" if literal.version == 6 else str(literal)
    userinfo = parsed.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + at + (f":{port}" if port else "")
    try:
        name = str(ipaddress.ip_address(host))
        header_name = f"[{name}]" if ":" in name else name
    except ValueError:
        try:  # as httpx encodes a host (IDNA 2008), not Python's codec (IDNA 2003)
            name = header_name = idna.encode(host).decode("ascii")
        except idna.IDNAError:
            name = header_name = host.encode("idna").decode("ascii")
    url = urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
    return url, header_name + (f":{port}" if port else ""), name


#: The most addresses of a host a download tries in turn (each up to
#: ``media_connect_timeout_s``).
MAX_ADDRESSES_TRIED = 4


def _through_proxy(parsed: urllib.parse.SplitResult) -> bool:
    """Whether httpx sends a request for this URL through a proxy named in the
    environment (``HTTP(S)_PROXY``, ``ALL_PROXY``, less ``NO_PROXY``): then the proxy
    resolves the name and connects, and the URL must keep it (the proxy's allow-lists,
    its CONNECT and the certificate check all read the name)."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parsed.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(parsed.hostname or "", proxies)


class MediaFetcher:
    """Turns a media reference (``uri``, or base64 ``data`` with ``mime``) into checked bytes.

    >>> fetcher = MediaFetcher(MediaPolicy())
    >>> png = base64.b64encode(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8)).decode()
    >>> len(fetcher.fetch("image", data=png, mime="image/png"))
    16
    >>> fetcher.fetch("image", uri="file:///etc/passwd")
    Traceback (most recent call last):
    ...
    encoders.media.MediaError: file:// URIs are disabled: add the directory to media_allowed_dirs
    """

    def __init__(self, policy: MediaPolicy) -> None:
        self.policy = policy

    def fetch(
        self,
        modality: str,
        uri: str | None = None,
        data: str | None = None,
        mime: str | None = None,
    ) -> bytes:
        """The bytes of one media reference, checked against the policy and ``modality``."""
        if data is not None:
            content = self._inline(data)
        elif uri is not None:
            try:
                content = self._from_uri(uri)
            except MediaError:
                raise
            except (ValueError, UnicodeError) as error:
                # e.g. a NUL byte or a lone surrogate in the path: the OS cannot name it.
                raise MediaError(DISALLOWED, f"not a usable URI ({error}): {uri[:200]!r}") from None
        else:
            raise MediaError(CORRUPT, "a media reference needs a 'uri' or inline 'data'")
        self._check_kind(modality, content, mime)
        return content

    # -- sources -----------------------------------------------------------------------

    def _inline(self, data: str) -> bytes:
        # base64 grows data by 4/3: refuse before decoding what would be too large.
        if len(data) * 3 // 4 > self.policy.max_bytes:
            raise self._oversized(len(data) * 3 // 4)
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(CORRUPT, "inline 'data' is not valid base64") from None

    def _from_uri(self, uri: str) -> bytes:
        try:
            parsed = urllib.parse.urlsplit(uri)
            port = parsed.port  # parsed lazily: a bad port only raises here
        except ValueError as error:
            raise MediaError(DISALLOWED, f"not a valid URI ({error}): {uri[:200]!r}") from None
        scheme = parsed.scheme.lower()
        if scheme not in self.policy.allowed_schemes or scheme not in ("file", "http", "https"):
            raise MediaError(
                DISALLOWED,
                f"URI scheme {scheme or '(none)'!r} is not allowed: "
                f"use one of {sorted(set(self.policy.allowed_schemes) - {'data'})} or inline data",
            )
        if scheme == "file":
            return self._read_file(parsed)
        return self._download(uri, parsed, port)

    def _read_file(self, parsed: urllib.parse.SplitResult) -> bytes:
        if parsed.netloc not in ("", "localhost"):
            raise MediaError(DISALLOWED, f"file URI names a host {parsed.netloc!r}: drop it")
        if not self.policy._resolved_dirs:
            raise MediaError(
                DISALLOWED, "file:// URIs are disabled: add the directory to media_allowed_dirs"
            )
        # Resolve symlinks and '..' before the check, so neither can step outside.
        path = Path(urllib.parse.unquote(parsed.path, errors="strict")).resolve()
        if not any(path.is_relative_to(root) for root in self.policy._resolved_dirs):
            raise MediaError(
                DISALLOWED, f"{path} is outside media_allowed_dirs {list(self.policy.allowed_dirs)}"
            )
        return self._read_regular_file(path)

    def _read_regular_file(self, path: Path) -> bytes:
        """Only a regular file is read: a FIFO or a device could block a thread for good or
        never end. Opened non-blocking and checked on the open descriptor (no race with a
        rename), then read up to ``max_bytes`` within ``read_timeout_s``."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as error:
            raise MediaError(UNREACHABLE, f"cannot read {path}: {error.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise MediaError(DISALLOWED, f"{path} is not a regular file: only files are read")
            if info.st_size > self.policy.max_bytes:
                raise self._oversized(info.st_size)
            deadline = time.monotonic() + self.policy.read_timeout_s
            chunks, received = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise MediaError(
                        UNREACHABLE,
                        f"reading {path} took over media_read_timeout_s="
                        f"{self.policy.read_timeout_s:g}",
                    )
                try:
                    chunk = os.read(fd, 1 << 20)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                if not chunk:
                    return b"".join(chunks)
                received += len(chunk)
                if received > self.policy.max_bytes:  # the file grew while being read
                    raise self._oversized(received)
                chunks.append(chunk)
        except OSError as error:
            reason = DISALLOWED if error.errno == errno.EISDIR else UNREACHABLE
            raise MediaError(reason, f"cannot read {path}: {error.strerror}") from None
        finally:
            os.close(fd)

    def _download(self, uri: str, parsed: urllib.parse.SplitResult, port: int | None) -> bytes:
        host = (parsed.hostname or "").lower()
        if self.policy.allowed_hosts and host not in self.policy.allowed_hosts:
            raise MediaError(
                DISALLOWED,
                f"host {host!r} is not in media_allowed_hosts {list(self.policy.allowed_hosts)}",
            )
        if not host:
            raise MediaError(DISALLOWED, f"the URI names no host: {uri[:200]!r}")
        headers = {"User-Agent": self.policy.user_agent}
        # Connect to an address just checked, never to a second resolution of the name: a
        # name can answer a public address to the check and a private one to the
        # connection (DNS rebinding). The name still goes in Host and TLS's SNI, and the
        # certificate is checked against it. Each address in turn, as a resolver's
        # connection would (a host's IPv6 address first on a machine without IPv6).
        pins: list[str | None] = [None]  # None: the URI as it is
        if not self.policy.allow_private_hosts:
            default_port = 443 if parsed.scheme == "https" else 80
            addresses = self._public_addresses(host, port or default_port)
            if not _through_proxy(parsed):  # else the proxy resolves and connects
                pins = list(addresses[:MAX_ADDRESSES_TRIED])
        failure = ""
        for address in pins:
            target, extensions = uri, {}
            if address is not None:
                target, headers["Host"], server_name = _pinned(parsed, host, port, address)
                if parsed.scheme == "https":
                    extensions = {"sni_hostname": server_name}
            try:
                return self._get(uri, target, headers, extensions)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                failure = f"{type(error).__name__}: {error}"
        raise MediaError(UNREACHABLE, f"GET {uri} failed: {failure}")

    def _get(
        self, uri: str, target: str, headers: dict[str, str], extensions: dict[str, str]
    ) -> bytes:
        """GET ``target`` (``uri``, or it pinned to an address); raises ``httpx.ConnectError``
        or ``ConnectTimeout`` when nothing answers there, ``MediaError`` for anything else."""
        timeout = httpx.Timeout(self.policy.read_timeout_s, connect=self.policy.connect_timeout_s)
        try:
            # No redirects: a redirect could lead to a host the checks above refuse.
            with (
                httpx.Client(timeout=timeout, follow_redirects=False) as client,
                client.stream("GET", target, headers=headers, extensions=extensions) as response,
            ):
                if response.status_code != 200:
                    raise MediaError(UNREACHABLE, f"GET {uri} answered HTTP {response.status_code}")
                declared = int(response.headers.get("content-length") or 0)
                if declared > self.policy.max_bytes:
                    raise self._oversized(declared)
                # The whole body within read_timeout_s (one read may overrun it by as much
                # again): a server dripping a byte a second held a thread for days.
                deadline = time.monotonic() + self.policy.read_timeout_s
                chunks, received = [], 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > self.policy.max_bytes:
                        raise self._oversized(received)
                    if time.monotonic() > deadline:
                        raise MediaError(
                            UNREACHABLE,
                            f"GET {uri} took over media_read_timeout_s="
                            f"{self.policy.read_timeout_s:g} to send its body",
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise
        except httpx.HTTPError as error:
            failure = f"GET {uri} failed: {type(error).__name__}: {error}"
            raise MediaError(UNREACHABLE, failure) from None

    def _public_addresses(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to, in the resolver's order, once every one of
        them is public (and carries no private IPv4 address inside it)."""
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as error:
            raise MediaError(UNREACHABLE, f"cannot resolve host {host!r}: {error}") from None
        if not infos:
            raise MediaError(UNREACHABLE, f"cannot resolve host {host!r}: no address")
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not is_public(address):
                raise MediaError(
                    DISALLOWED,
                    f"host {host!r} resolves to non-public address {address}: "
                    "set media_allow_private_hosts for an internal media server",
                )
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    # -- checks ------------------------------------------------------------------------

    def _check_kind(self, modality: str, content: bytes, mime: str | None) -> None:
        if not content:
            raise MediaError(CORRUPT, f"the {modality} is empty (0 bytes)")
        if len(content) > self.policy.max_bytes:
            raise self._oversized(len(content))
        sniffed = sniff_format(content)
        if sniffed is None:
            formats = sorted(name for name, (kind, _) in _SIGNATURES.items() if kind == modality)
            raise MediaError(
                UNSUPPORTED, f"the {modality} is not a format we decode (one of {formats})"
            )
        actual, name = sniffed
        if actual != modality:
            raise MediaError(MISLABELLED, f"the {modality} field holds {actual} data ({name})")
        if mime and not mime.lower().startswith(f"{modality}/"):
            raise MediaError(
                MISLABELLED, f"mime {mime!r} does not match the content ({modality}/{name})"
            )

    def _oversized(self, size: int) -> MediaError:
        return MediaError(
            OVERSIZED,
            f"media of {size:,} bytes exceeds media_max_bytes={self.policy.max_bytes:,}",
        )
