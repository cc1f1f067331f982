#!/usr/bin/env python3
"""A small real application for the proxy tests and bench: HTTP/1.1
(keep-alive) on HOST:PORT (default 127.0.0.1), SQLite on an ltxfs
mount.

    proxy_app.py PORT DB_PATH [HOST]

    POST /rows            inserts a row (the body is its text);
                          answers {"id": N}
    GET  /rows/N          200 when row N exists, else 404
    GET  /rows            {"count": rows, "max": the highest id}
    GET  /ping            "pong" (no database)
    GET  /headers...      the request's headers as JSON, with app-port
                          and app-db (DB_PATH: which node's app answered)
    POST /headers...      the same (the body is read and dropped)
    POST /upload          reads the body in pieces (Content-Length or
                          chunked) and answers {"size": bytes}
    GET  /sse             an event stream: "data: one", then, once
                          GET /sse-release came, "data: two" and the end
    GET  /ws              with Connection: Upgrade, Upgrade: echo:
                          101, then every line sent comes back as
                          "echo: <line>" until the client closes
The table is created by the caller (CREATE TABLE rows(id INTEGER
PRIMARY KEY, v TEXT)) on the primary.
"""

import json
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DB = None
RELEASE = threading.Event()
LOCAL = threading.local()


def conn(ro):
    key = "ro" if ro else "rw"
    c = getattr(LOCAL, key, None)
    if c is None:
        if ro:
            c = sqlite3.connect("file:%s?mode=ro" % DB, uri=True,
                                timeout=10, isolation_level=None)
        else:
            c = sqlite3.connect(DB, timeout=10, isolation_level=None)
        setattr(LOCAL, key, c)
    return c


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer (flushed after each request) and no Nagle:
    # else delayed ACKs cost 40 ms an answer.
    wbufsize = 65536
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body, ctype="application/json"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body_pieces(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n",
                                                        b""):
                        pass
                    return
                left = size
                while left:
                    piece = self.rfile.read(min(left, 65536))
                    if not piece:
                        raise ConnectionError("short chunk")
                    left -= len(piece)
                    yield piece
                self.rfile.readline()
        left = int(self.headers.get("Content-Length", "0"))
        while left:
            piece = self.rfile.read(min(left, 65536))
            if not piece:
                raise ConnectionError("short body")
            left -= len(piece)
            yield piece

    def headers_json(self):
        d = dict(self.headers.items())
        d["app-port"] = self.server.server_address[1]
        d["app-db"] = DB
        return self.answer(200, json.dumps(d))

    def do_POST(self):
        if self.path.startswith("/headers"):
            for _ in self.body_pieces():
                pass
            return self.headers_json()
        if self.path == "/upload":
            n = sum(len(p) for p in self.body_pieces())
            return self.answer(200, json.dumps({"size": n}))
        if self.path == "/rows":
            text = b"".join(self.body_pieces()).decode()
            try:
                cur = conn(False).execute("INSERT INTO rows(v) VALUES (?)",
                                          (text,))
            except sqlite3.Error as e:
                return self.answer(500, json.dumps({"error": str(e)}))
            return self.answer(200, json.dumps({"id": cur.lastrowid}))
        for _ in self.body_pieces():
            pass
        self.answer(404, "{}")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        p = self.path
        if p == "/ping":
            return self.answer(200, "pong", "text/plain")
        if p.startswith("/headers"):
            return self.headers_json()
        if p == "/rows":
            c, m = conn(True).execute(
                "SELECT count(*), coalesce(max(id), 0) FROM rows").fetchone()
            return self.answer(200, json.dumps({"count": c, "max": m}))
        if p.startswith("/rows/"):
            row = conn(True).execute("SELECT 1 FROM rows WHERE id = ?",
                                     (int(p[6:]),)).fetchone()
            return self.answer(200 if row else 404, "{}")
        if p == "/sse-release":
            RELEASE.set()
            return self.answer(200, "{}")
        if p == "/sse":
            return self.sse()
        if p == "/ws" and self.headers.get("Upgrade") == "echo":
            return self.echo()
        self.answer(404, "{}")

    def sse(self):
        RELEASE.clear()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, ev in enumerate((b"data: one\n\n", b"data: two\n\n")):
            if i == 1 and not RELEASE.wait(30):
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def echo(self):
        self.send_response(101)
        self.send_header("Upgrade", "echo")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        while True:
            line = self.rfile.readline()
            if not line:
                break
            self.wfile.write(b"echo: " + line)
            self.wfile.flush()
        self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main():
    global DB
    port, DB = int(sys.argv[1]), sys.argv[2]
    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    srv = Server((host, port), Handler)
    print("listening", port, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
