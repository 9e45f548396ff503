"""Media fetching under the policy: schemes, directories, hosts, sizes, types, timeouts."""

from __future__ import annotations

import base64
import contextlib
import http.server
import threading
from collections.abc import Iterator

import pytest

from encoders.media import (
    CORRUPT,
    DISALLOWED,
    MISLABELLED,
    OVERSIZED,
    UNREACHABLE,
    UNSUPPORTED,
    MediaError,
    MediaFetcher,
    MediaPolicy,
)
from tests.conftest import free_port
from tests.media_samples import audio_file, encoded, stripes, tone

PNG = encoded(stripes(64))
WAV = audio_file(tone(440, 0.5))


def refused(fetcher: MediaFetcher, modality: str = "image", **source: str) -> MediaError:
    with pytest.raises(MediaError) as error:
        fetcher.fetch(modality, **source)
    return error.value


@pytest.fixture(scope="module")
def media_server() -> Iterator[str]:
    """A real HTTP server on localhost: /image.png, /big.png, /redirect, /slow, 404 otherwise."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/image.png":
                body = PNG
            elif self.path == "/big.png":
                body = PNG + bytes(200_000)
            elif self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data")
                self.end_headers()
                return
            elif self.path == "/slow":
                threading.Event().wait(3)
                body = PNG
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # The client may hang up first, as it should on oversized or slow media.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_inline_media_is_decoded_and_checked() -> None:
    fetcher = MediaFetcher(MediaPolicy(max_bytes=100_000))
    assert fetcher.fetch("image", data=base64.b64encode(PNG).decode(), mime="image/png") == PNG
    assert fetcher.fetch("audio", data=base64.b64encode(WAV).decode(), mime="audio/wav") == WAV
    assert refused(fetcher, data="not base64!!").reason == CORRUPT
    assert refused(fetcher, data="").reason == CORRUPT
    big = base64.b64encode(bytes(150_000)).decode()
    assert refused(fetcher, data=big).reason == OVERSIZED
    html = base64.b64encode(b"<html>hello</html>").decode()
    assert refused(fetcher, data=html, mime="image/png").reason == UNSUPPORTED
    # Audio bytes in the image field, and an image labelled as audio.
    assert refused(fetcher, data=base64.b64encode(WAV).decode()).reason == MISLABELLED
    png = base64.b64encode(PNG).decode()
    assert refused(fetcher, data=png, mime="audio/mpeg").reason == MISLABELLED


def test_file_uris_only_inside_allowed_directories(tmp_path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    (media / "link.png").symlink_to(tmp_path / "secret.png")

    closed = MediaFetcher(MediaPolicy())
    assert refused(closed, uri=f"file://{media}/a.png").reason == DISALLOWED
    assert refused(closed, uri="file:///etc/passwd").reason == DISALLOWED

    fetcher = MediaFetcher(MediaPolicy(allowed_dirs=(media,)))
    assert fetcher.fetch("image", uri=f"file://{media}/a.png") == PNG
    for outside in (
        "file:///etc/passwd",
        f"file://{media}/../secret.png",
        f"file://{media}/link.png",  # a symlink pointing out of the directory
        f"file://otherhost{media}/a.png",
    ):
        assert refused(fetcher, uri=outside).reason == DISALLOWED, outside
    assert refused(fetcher, uri=f"file://{media}/missing.png").reason == UNREACHABLE
    small = MediaFetcher(MediaPolicy(allowed_dirs=(media,), max_bytes=100))
    assert refused(small, uri=f"file://{media}/a.png").reason == OVERSIZED


def test_schemes_and_non_public_hosts_are_refused() -> None:
    fetcher = MediaFetcher(MediaPolicy())
    for uri in (
        "ftp://example.com/a.png",
        "gopher://example.com/a.png",
        "a.png",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "http://127.0.0.1/a.png",
        "http://10.0.0.8/a.png",
        "http://[::1]/a.png",
    ):
        assert refused(fetcher, uri=uri).reason == DISALLOWED, uri
    only_https = MediaFetcher(MediaPolicy(allowed_schemes=("https",)))
    assert refused(only_https, uri="http://example.com/a.png").reason == DISALLOWED
    listed = MediaFetcher(MediaPolicy(allowed_hosts=("cdn.example.com",)))
    assert refused(listed, uri="https://example.org/a.png").reason == DISALLOWED


def test_http_download_with_limits(media_server: str) -> None:
    # The test server is on localhost, which only an explicit opt-in may reach.
    assert refused(MediaFetcher(MediaPolicy()), uri=f"{media_server}/image.png").reason == (
        DISALLOWED
    )
    policy = MediaPolicy(allow_private_hosts=True, read_timeout_s=1.0, max_bytes=100_000)
    fetcher = MediaFetcher(policy)
    assert fetcher.fetch("image", uri=f"{media_server}/image.png") == PNG
    assert refused(fetcher, uri=f"{media_server}/big.png").reason == OVERSIZED
    assert refused(fetcher, uri=f"{media_server}/missing.png").reason == UNREACHABLE
    redirect = refused(fetcher, uri=f"{media_server}/redirect")
    assert redirect.reason == UNREACHABLE and "302" in redirect.message
    slow = refused(fetcher, uri=f"{media_server}/slow")
    assert slow.reason == UNREACHABLE and "Timeout" in slow.message
    closed_port = f"http://127.0.0.1:{free_port()}/a.png"
    assert refused(fetcher, uri=closed_port).reason == UNREACHABLE
