"""Hostile media: every header field a decoder or the resampler sizes its work from is
bounded before decoding, only regular files are read, and a malformed URI fails its own
item with a MediaError (issue 16, classes 1 and 5)."""

from __future__ import annotations

import contextlib
import http.server
import io
import math
import os
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders.audio import MAX_RESAMPLE_KERNEL, LogMelAudioEncoder, decode_audio, resample_rate
from encoders.image import decode_image
from encoders.media import (
    DISALLOWED,
    UNREACHABLE,
    MediaError,
    MediaFetcher,
    MediaPolicy,
    _pinned,
)
from tests.integration.helpers import make_tls
from tests.media_samples import audio_file, encoded, stripes, tone

WAV = audio_file(tone(440, 0.2))
PNG = encoded(stripes(64))
MEDIA_REASONS = {
    "media-corrupt",
    "media-oversized",
    "media-unsupported-format",
    "media-mislabelled",
    "media-disallowed-uri",
    "media-unreachable",
}


def wav_with_header(rate: int, channels: int, bits: int) -> bytes:
    """The sample WAV with its 'fmt ' fields rewritten: what a hostile producer controls."""
    assert WAV[12:16] == b"fmt "
    block = max(channels * bits // 8, 0) & 0xFFFF
    fields = struct.pack("<HIIHH", channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    return WAV[:22] + fields + WAV[36:]


def png_with_size(width: int, height: int) -> bytes:
    """The sample PNG with its IHDR width and height rewritten (and a valid CRC)."""
    assert PNG[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + PNG[24:29]
    return PNG[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + PNG[33:]


@pytest.fixture(scope="module")
def audio_encoder() -> LogMelAudioEncoder:
    return LogMelAudioEncoder(threads=1)


def test_the_issue_s_absurd_sample_rate_is_refused_before_decoding() -> None:
    hostile = wav_with_header(rate=2_000_000_000, channels=1, bits=16)
    assert len(hostile) < 8_000
    with pytest.raises(MediaError) as error:
        decode_audio(hostile, max_seconds=600)
    assert error.value.reason == "media-corrupt" and "sample rate" in error.value.message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.one_of(st.integers(0, 2**32 - 1), st.integers(900, 200_000)),
    channels=st.integers(0, 2**16 - 1),
    bits=st.sampled_from([0, 1, 8, 12, 16, 24, 32, 64, 255]),
)
def test_any_audio_header_is_refused_or_decodes_and_encodes_within_bounds(
    audio_encoder: LogMelAudioEncoder, rate: int, channels: int, bits: int
) -> None:
    """Without the bounds, a coprime rate such as 191,999 Hz made the resampler build a
    kernel of 12 GB and a rate of 2e9 Hz one of terabytes."""
    try:
        clip = decode_audio(wav_with_header(rate, channels, bits), max_seconds=10)
    except MediaError as error:
        assert error.reason in MEDIA_REASONS
        return
    assert 1_000 <= clip.sample_rate <= 192_000
    assert clip.seconds <= 10
    vector = audio_encoder.encode([clip])[0]
    assert vector.shape == (audio_encoder.dim,) and np.isfinite(vector).all()


@given(st.integers(1_000, 192_000))
def test_the_resampler_kernel_is_bounded_and_the_rate_barely_moves(rate: int) -> None:
    target = LogMelAudioEncoder.SAMPLE_RATE
    told = resample_rate(rate, target)
    divisor = math.gcd(told, target)
    assert (target // divisor) * (told // divisor + 64) <= MAX_RESAMPLE_KERNEL
    assert abs(told - rate) / rate < 0.013


def float_wav(peak: float) -> bytes:
    """One second of a tone in a 32-bit float WAV, reaching about ``peak``: float WAV
    stores whatever it is given, where integer PCM cannot leave [-1, 1]."""
    buffer = io.BytesIO()
    samples = (peak * np.sin(np.arange(16_000))).astype(np.float32)
    soundfile.write(buffer, samples, 16_000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.mark.parametrize("peak", [1e19, 1e12, 2.0])
def test_float_audio_beyond_full_scale_is_refused_naming_the_fix(peak: float) -> None:
    """Before: 1e19 passed the NaN check and overflowed the log-mel features (dead-lettered
    as an ``internal-error`` of the encoder); 1e10 to 1e17 were stored with features near
    520."""
    with pytest.raises(MediaError) as refused:
        decode_audio(float_wav(peak), max_seconds=10)
    assert refused.value.reason == "media-corrupt"
    assert refused.value.message.startswith(f"audio samples reach {peak:.3g}, beyond the ±1")
    assert "normalise the clip" in refused.value.message


def test_float_audio_within_full_scale_is_decoded_as_it_is() -> None:
    clip = decode_audio(float_wav(0.999), max_seconds=10)
    assert 0.99 < np.abs(clip.samples).max() <= 0.999


def test_audio_with_too_many_channels_is_refused() -> None:
    with pytest.raises(MediaError, match="channels"):
        decode_audio(audio_file(np.zeros((100, 20), dtype=np.float32)), max_seconds=10)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_any_image_size_in_a_header_is_refused_or_decoded_within_bounds(
    width: int, height: int
) -> None:
    try:
        image = decode_image(png_with_size(width, height), max_pixels=10**7, max_side=20_000)
    except MediaError as error:
        assert error.reason in MEDIA_REASONS
        return
    assert image.size == (width, height) and width * height <= 10**7


def test_a_long_thin_image_is_refused_by_its_side() -> None:
    with pytest.raises(MediaError, match="each side"):
        decode_image(png_with_size(100_000, 1), max_pixels=10**7, max_side=20_000)


# -- files ------------------------------------------------------------------------------


def fetch_in_thread(fetcher: MediaFetcher, uri: str) -> MediaError | bytes:
    """Fetch in a thread joined with a timeout: a fetch that blocks fails the test instead
    of hanging it."""
    outcome: list[MediaError | bytes] = []

    def run() -> None:
        try:
            outcome.append(fetcher.fetch("image", uri=uri))
        except MediaError as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), f"fetching {uri} blocked"
    return outcome[0]


def test_a_fifo_in_an_allowed_directory_is_refused_without_blocking(tmp_path: Path) -> None:
    """Before: open() on a FIFO with no writer blocked the ingestion thread for good."""
    os.mkfifo(tmp_path / "pipe.png")
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(tmp_path,)))
    outcome = fetch_in_thread(fetcher, f"file://{tmp_path}/pipe.png")
    assert isinstance(outcome, MediaError) and outcome.reason == DISALLOWED
    assert "regular file" in outcome.message


def test_a_device_is_never_read(tmp_path: Path) -> None:
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(Path("/dev"),)))
    outcome = fetch_in_thread(fetcher, "file:///dev/zero")
    assert isinstance(outcome, MediaError) and outcome.reason == DISALLOWED


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(tmp_path,)))
    outcome = fetch_in_thread(fetcher, f"file://{tmp_path}/sub")
    assert isinstance(outcome, MediaError)


def test_a_regular_file_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(tmp_path,)))
    assert fetch_in_thread(fetcher, f"file://{tmp_path}/a.png") == PNG


@pytest.mark.parametrize("tail", ["a\x00b.png", "a%00b.png", "%ff%fe.png", "\ud800.png", "%"])
def test_a_nul_byte_or_bad_escape_in_a_file_uri_is_a_media_error(tmp_path: Path, tail: str) -> None:
    """Before: a NUL byte raised ValueError inside the policy and lost the whole batch."""
    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(tmp_path,)))
    outcome = fetch_in_thread(fetcher, f"file://{tmp_path}/{tail}")
    assert isinstance(outcome, MediaError) and outcome.reason in MEDIA_REASONS


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40), st.sampled_from(["file://{root}/", "file://{root}/../", "http://"]))
def test_any_uri_under_an_allowed_directory_only_ever_raises_media_errors(
    tmp_path_factory: pytest.TempPathFactory, tail: str, prefix: str
) -> None:
    root = tmp_path_factory.getbasetemp()
    fetcher = MediaFetcher(
        MediaPolicy(allowed_dirs=(root,), connect_timeout_s=0.2, read_timeout_s=0.2)
    )
    try:
        fetcher.fetch("image", uri=prefix.format(root=root) + tail)
    except MediaError as error:
        assert error.reason in MEDIA_REASONS


# -- downloads --------------------------------------------------------------------------


class _Servers:
    """Two HTTP servers on loopback, each answering a PNG that names it: one plays a
    public media host, the other an internal service a URI must never reach."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.ports: dict[str, int] = {}
        self.bodies: dict[str, bytes] = {}
        self._servers = [self._serve(name) for name in ("public", "internal")]

    def _serve(self, name: str) -> http.server.ThreadingHTTPServer:
        servers = self
        body = PNG + name.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                servers.hosts.append(self.headers.get("Host", ""))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + 30))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)
                    self.wfile.flush()
                    if self.path == "/drip":  # a byte every 0.1 s
                        for _ in range(30):
                            time.sleep(0.1)
                            self.wfile.write(b"x")
                            self.wfile.flush()
                    else:
                        self.wfile.write(bytes(30))

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.ports[name] = server.server_address[1]
        self.bodies[name] = body + bytes(30)
        return server

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()


@pytest.fixture()
def servers() -> Iterator[_Servers]:
    both = _Servers()
    yield both
    both.close()


PUBLIC = "93.184.216.34"


def test_a_name_that_resolves_again_to_a_private_address_is_not_connected_to(
    servers: _Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers a public address to the check and loopback to the
    connection. Before: the worker resolved it twice and fetched the internal service."""
    port = servers.ports["internal"]
    answers = iter([PUBLIC] + ["127.0.0.1"] * 10)
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "media.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real_getaddrinfo(host, *args, **kwargs)

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        # No network in tests: the public address is the "public" server on loopback.
        if address == (PUBLIC, port):
            address = ("127.0.0.1", servers.ports["public"])
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    fetched = MediaFetcher(MediaPolicy()).fetch("image", uri=f"http://media.example:{port}/a.png")
    assert fetched == servers.bodies["public"]
    assert servers.hosts == [f"media.example:{port}"]  # the name still sent as Host


def test_a_download_dripping_its_body_ends_within_the_read_timeout(servers: _Servers) -> None:
    """Before: the read timeout bounded one read, so a server sending a byte every 0.1 s
    held the fetching thread for as long as it liked (3 s here, days for 20 MB)."""
    fetcher = MediaFetcher(MediaPolicy(allow_private_hosts=True, read_timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(MediaError, match="media_read_timeout_s") as error:
        fetcher.fetch("image", uri=f"http://127.0.0.1:{servers.ports['public']}/drip")
    assert error.value.reason == UNREACHABLE
    assert time.monotonic() - started < 1.5
    whole = fetcher.fetch("image", uri=f"http://127.0.0.1:{servers.ports['public']}/a.png")
    assert whole == servers.bodies["public"]


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 to 169.254.169.254
        "64:ff9b:1::a00:1",  # local-use NAT64 to 10.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::ffff:10.0.0.1",
        "127.0.0.2",
        "fe80::1%1",
    ],
)
def test_an_address_that_carries_a_private_one_is_refused(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python calls NAT64, IPv4-compatible and 6to4 addresses global whatever IPv4 address
    they carry. Before: they passed the check, and were connected to."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *args, **kwargs: [(family, socket.SOCK_STREAM, 6, "", (address, 80))],
    )
    fetcher = MediaFetcher(MediaPolicy(connect_timeout_s=0.2, read_timeout_s=0.2))
    with pytest.raises(MediaError, match="non-public") as error:
        fetcher.fetch("image", uri="https://media.example/a.png")
    assert error.value.reason == DISALLOWED


@pytest.mark.parametrize(
    ("uri", "address", "pinned", "host", "server_name"),
    [
        (
            "https://cdn.example/a.png?x=1",
            PUBLIC,
            f"https://{PUBLIC}/a.png?x=1",
            "cdn.example",
            "cdn.example",
        ),
        (
            "http://u:p@CDN.example:8080/a",
            "2606:2800::1",
            "http://u:p@[2606:2800::1]:8080/a",
            "cdn.example:8080",
            "cdn.example",
        ),
        (
            "https://bücher.example/a",
            PUBLIC,
            f"https://{PUBLIC}/a",
            "xn--bcher-kva.example",
            "xn--bcher-kva.example",
        ),
        (
            "https://[2606:2800::1]/a",
            "2606:2800::1",
            "https://[2606:2800::1]/a",
            "[2606:2800::1]",
            "2606:2800::1",
        ),
    ],
)
def test_a_download_connects_to_the_address_checked_and_names_the_host(
    uri: str, address: str, pinned: str, host: str, server_name: str
) -> None:
    parsed = urllib.parse.urlsplit(uri)
    assert _pinned(parsed, parsed.hostname or "", parsed.port, address) == (
        pinned,
        host,
        server_name,
    )


class _TlsHost:
    """An https media server on loopback with a certificate for ``media.test`` only (its
    CA trusted through ``SSL_CERT_FILE``), and a CONNECT proxy in front of it; the name
    resolves to public addresses, which connections reach on loopback."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        ca, _ = make_tls(directory, "media", names="DNS:media.test")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "media-server.pem", directory / "media-server.key")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]
        self.proxy = socket.create_server(("127.0.0.1", 0))
        self.proxied: list[str] = []  # what each CONNECT asked for
        threading.Thread(target=self._proxy_forever, daemon=True).start()
        self.addresses = [PUBLIC]
        self.refused = {"93.184.216.99"}  # a public address where nothing answers
        real_connect, real_getaddrinfo = socket.create_connection, socket.getaddrinfo

        def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
            if address[0] in self.refused:
                raise ConnectionRefusedError(111, "Connection refused")
            if address[0] == PUBLIC:
                address = ("127.0.0.1", address[1])
            return real_connect(address, *args, **kwargs)

        def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
            if host != "media.test":
                return real_getaddrinfo(host, port, *args, **kwargs)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in self.addresses]

        monkeypatch.setattr(socket, "create_connection", create_connection)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        for name in ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.lower(), raising=False)
        self.real_connect = real_connect

    def _proxy_forever(self) -> None:
        while True:
            client, _ = self.proxy.accept()
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += client.recv(4096)
        self.proxied.append(request.split(b" ")[1].decode())
        upstream = self.real_connect(("127.0.0.1", self.port))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.shutdown()
        self.proxy.close()


@pytest.fixture()
def tls_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_TlsHost]:
    host = _TlsHost(tmp_path, monkeypatch)
    yield host
    host.close()


def test_an_https_download_to_the_address_checked_verifies_the_host_s_certificate(
    tls_host: _TlsHost,
) -> None:
    """The connection goes to the address checked, the certificate is checked against
    the name (SNI); another name's certificate is refused."""
    fetcher = MediaFetcher(MediaPolicy())
    assert fetcher.fetch("image", uri=f"https://media.test:{tls_host.port}/a.png") == PNG
    assert tls_host.proxied == []


def test_an_https_download_through_a_proxy_keeps_the_name(
    tls_host: _TlsHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``HTTPS_PROXY`` the proxy resolves and connects: it is asked for the name,
    and the certificate is checked against it. Pinned to the address, every download
    through a proxy had failed its certificate check (the tunnel named the address)."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{tls_host.proxy.getsockname()[1]}")
    fetcher = MediaFetcher(MediaPolicy())
    assert fetcher.fetch("image", uri=f"https://media.test:{tls_host.port}/a.png") == PNG
    assert tls_host.proxied == [f"media.test:{tls_host.port}"]


def test_a_download_tries_the_host_s_next_address_when_one_does_not_answer(
    tls_host: _TlsHost,
) -> None:
    """All of a name's addresses are checked; each is tried in turn, as a resolver's
    connection would (only the first was, and a host whose first address is down was
    unreachable); none answering is one ``media-unreachable``."""
    tls_host.addresses = ["93.184.216.99", PUBLIC]
    fetcher = MediaFetcher(MediaPolicy())
    assert fetcher.fetch("image", uri=f"https://media.test:{tls_host.port}/a.png") == PNG
    tls_host.addresses = ["93.184.216.99"]
    with pytest.raises(MediaError, match="ConnectError") as error:
        fetcher.fetch("image", uri=f"https://media.test:{tls_host.port}/a.png")
    assert error.value.reason == UNREACHABLE
