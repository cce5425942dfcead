"""A small HTTP server that hands one job's files to its board.

A secondary-media deploy writes an image from the booted board
(``wget -O - URL | dd of=/dev/sdX``): the board fetches the image from the
dispatcher. Each published file gets an unguessable path; nothing else is
served (no listing, no other file), and the server ends with the job.
"""

from __future__ import annotations

import http.server
import secrets
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote


class FileServer:
    def __init__(self, bind: str = "127.0.0.1"):
        self.files: dict[str, Path] = {}
        files = self.files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                token, _, _name = unquote(self.path).lstrip("/").partition("/")
                path = files.get(token)
                if path is None or not path.is_file():
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                with open(path, "rb") as handle:
                    shutil.copyfileobj(handle, self.wfile, 1024 * 1024)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((bind, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="file-server", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def publish(self, path: Path, host: str) -> str:
        """The URL under which the board at the other end of ``host`` fetches ``path``."""
        token = secrets.token_urlsafe(12)
        self.files[token] = path
        return f"http://{host}:{self.port}/{token}/{path.name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
