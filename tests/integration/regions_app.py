"""A small real HTTP application on an ltxfs mount, for the regions tests
(regions_harness.Regions.spawn runs it in a node's namespace):

    python3 regions_app.py HOST PORT DB

  GET /        200, JSON {"rows": [[id, body], ...]} of table rows (read
               through a read-only connection: it works on a replica)
  POST /       inserts the request body (UTF-8) as a row; 200, JSON
               {"id": id}; 500 with the error's text when SQLite refuses
               (a replica's database is read-only)

It creates the table on its first POST. One thread per request
(ThreadingHTTPServer); SIGTERM ends it (exit 0). "listening\\n" is printed
on stdout once it accepts connections.
"""

import json
import signal
import sqlite3
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DB = None


def rows():
    c = sqlite3.connect("file:%s?mode=ro" % DB, uri=True, timeout=30)
    try:
        has = c.execute("SELECT 1 FROM sqlite_schema WHERE name='rows'") \
            .fetchone()
        return c.execute("SELECT id, body FROM rows ORDER BY id") \
            .fetchall() if has else []
    finally:
        c.close()


def insert(body):
    c = sqlite3.connect(DB, timeout=30, isolation_level=None)
    try:
        c.execute("CREATE TABLE IF NOT EXISTS rows(id INTEGER PRIMARY KEY, "
                  "body TEXT)")
        return c.execute("INSERT INTO rows(body) VALUES (?)",
                         (body,)).lastrowid
    finally:
        c.close()


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            self.reply(200, {"rows": rows()})
        except sqlite3.Error as e:
            self.reply(500, {"error": str(e)})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode()
        try:
            self.reply(200, {"id": insert(body)})
        except sqlite3.Error as e:
            self.reply(500, {"error": str(e)})

    def log_message(self, fmt, *args):
        pass


def main():
    global DB
    host, port, DB = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    srv = ThreadingHTTPServer((host, port), Handler)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
    print("listening", flush=True)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
