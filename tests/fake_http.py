"""A local HTTP server answering JSON POSTs on a real socket: the plumbing the tests' fake LLM
servers share (each brings its own `respond`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: respond(path, payload, request headers) -> (status, body, response headers); a dict body is sent
#: as JSON, a str as it is; a response header "sleep" (seconds) delays the answer and is not sent
Respond = Callable[[str, dict, dict], tuple[int, Any, dict]]


class JsonPostServer:
    """`url` ends in /v1; `start()` serves on a daemon thread, `close()` stops. `on_answered(path,
    payload)` runs after an answer was written whole; a client that hung up meanwhile is ignored."""

    def __init__(self, respond: Respond, *, on_answered: Callable[[str, dict], None] | None = None) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, body, headers = respond(self.path, payload, dict(self.headers))
                headers = dict(headers)
                time.sleep(headers.pop("sleep", 0))
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up or was killed
                    return
                if on_answered is not None:
                    on_answered(self.path, payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> JsonPostServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
