"""What a peer without the token can make a node hold (suite cluster;
docs/PROTOCOL.md, "Authentication" and "Connection limits").

Cases (argv[1]):
  import  POST /import with a wrong token and a 64 MiB body: the 401
          arrives after the headers alone, the server takes (at most) a
          few socket buffers of the body, never all of it, and the
          daemon's peak RSS (VmHWM) does not grow by the body's size;
          the same with chunked transfer encoding; with the right token,
          an import on a replica gets 409 and a bad db name 400, both
          before the body, and `ltxfs import` (libcurl) shows those
          answers; a real import still works.
  stream  GET /stream with a wrong token and a 64 MiB body: 401 before
          the body; with the right token and a body: 413 before it (405
          for POST); with the right token and another cluster's ID: 409.
  idle    120 idle or half-sent connections from 127.0.0.1: the server
          keeps at most 64 of them (per-address limit), /info from
          127.0.0.2 is served meanwhile, the ones kept are closed after
          the 10 s pre-authentication timeout, and a connection that
          showed the token outlives that timeout.

Every wait has a deadline; every address is on loopback.
"""

import http.client
import os
import select
import socket
import sqlite3
import subprocess
import sys
import time

import cluster_harness as ch
import ltxfs_harness as h
from ltxfs_harness import TestFailure, check, wait_for

TOKEN = "right-token"
BODY = 64 << 20              # what the client says it will send
TAKEN_MAX = 16 << 20         # socket buffers, not the body
HWM_GROWTH_MAX_KIB = 16 << 10
ANSWER_TIMEOUT = 10.0
PREAUTH_TIMEOUT = 10.0       # replica/server.c PREAUTH_TIMEOUT_S
PER_IP_LIMIT = 64            # replica/server.c CONN_PER_IP_LIMIT


def read_answer(s, timeout):
    """Reads until the end of the response headers or the connection's
    end; returns (status or None, text read)."""
    s.settimeout(0.2)
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end and b"\r\n\r\n" not in buf:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not d:
            break
        buf += d
    # The one-line body follows the headers; take what is there.
    try:
        s.settimeout(0.5)
        buf += s.recv(65536)
    except OSError:
        pass
    text = buf.decode("latin-1")
    parts = text.split(" ", 2)
    if len(parts) >= 2 and parts[0].startswith("HTTP/1.") and \
            parts[1].isdigit():
        return int(parts[1]), text
    return None, text


def push_body(s, total, chunked=False, seconds=5.0):
    """Sends up to total body bytes (chunked: in chunks of 64 KiB) until
    the peer stops taking them (an error, or no progress for 2 s) or
    seconds pass. Returns the bytes the kernel accepted."""
    piece = b"x" * 65536
    if chunked:
        piece = b"10000\r\n" + piece + b"\r\n"
    sent = 0
    s.settimeout(2.0)
    end = time.monotonic() + seconds
    while sent < total and time.monotonic() < end:
        try:
            n = s.send(piece)
        except (socket.timeout, OSError):
            break
        sent += n
    return sent


def early_answer(node, head, what, want_status, chunked=False):
    """Sends the request head (no body), expects an answer with
    want_status within ANSWER_TIMEOUT, then tries to push the 64 MiB
    body; returns the answer text."""
    hwm0 = node.vm_hwm_kib()
    s = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    try:
        s.sendall(head.encode())
        t0 = time.monotonic()
        st, text = read_answer(s, ANSWER_TIMEOUT)
        took = time.monotonic() - t0
        check(st == want_status, "%s: expected %d after the headers alone "
              "(no body sent), got %r within %.1f s"
              % (what, want_status, text[:200], took))
        taken = push_body(s, BODY, chunked)
    finally:
        s.close()
    grew = node.vm_hwm_kib() - hwm0
    print("%s: %d after the headers in %.3f s; the server then took %.1f "
          "of %d MiB of body; VmHWM grew %d KiB"
          % (what, st, took, taken / 1048576.0, BODY >> 20, grew))
    check(taken < TAKEN_MAX, "%s: the server took %d bytes of a refused "
          "body" % (what, taken))
    check(grew < HWM_GROWTH_MAX_KIB, "%s: VmHWM grew %d KiB" % (what, grew))
    return text


def head_of(method, path, token, extra=""):
    return ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Authorization: Bearer %s\r\n%s\r\n"
            % (method, path, token, extra))


def small_db(path):
    if os.path.exists(path):
        os.unlink(path)
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE t(a)")
    c.execute("INSERT INTO t VALUES ('imported')")
    c.commit()
    c.close()
    with open(path, "rb") as f:
        return f.read()


def case_import():
    with ch.Cluster(2, token=TOKEN) as cl:
        cl.start()
        p, r = cl.primary, cl.replicas[0]
        refused0 = p.metrics()["ltxfs_http_unauthorized_total"]
        cl_len = "Content-Length: %d\r\n" % BODY
        early_answer(p, head_of("POST", "/import?db=big.db", "wrong", cl_len),
                     "POST /import, wrong token, Content-Length", 401)
        early_answer(p, head_of("POST", "/import?db=big.db", "wrong",
                                "Transfer-Encoding: chunked\r\n"),
                     "POST /import, wrong token, chunked", 401,
                     chunked=True)
        refused = p.metrics()["ltxfs_http_unauthorized_total"] - refused0
        check(refused == 2, "ltxfs_http_unauthorized_total went up by %d, "
              "not 2" % refused)
        text = early_answer(r, head_of("POST", "/import?db=big.db", TOKEN,
                                       cl_len),
                            "POST /import on a replica", 409)
        check("this node is a replica" in text, "409 without the reason: "
              "%r" % text)
        early_answer(p, head_of("POST", "/import?db=.hidden", TOKEN, cl_len),
                     "POST /import, bad db name", 400)
        # libcurl (ltxfs import) sends "Expect: 100-continue": it gets the
        # refusal, not a broken pipe, and sends no body.
        big = os.path.join(p.root, "big.bin")
        with open(big, "wb") as f:
            f.truncate(BODY)
        for node, token, want in ((r, TOKEN, "HTTP 409: this node is a "
                                   "replica"),
                                  (p, "wrong", "HTTP 401: missing or wrong "
                                   "bearer token")):
            t0 = time.monotonic()
            res = subprocess.run([h.ltxfs_bin(), "import", "--url", node.url,
                                  "big.db", big], capture_output=True,
                                 text=True, timeout=60,
                                 env=dict(os.environ, LTXFS_TOKEN=token))
            took = time.monotonic() - t0
            print("import: ltxfs import of %d MiB to %s: exit %d in %.2f s: "
                  "%s" % (BODY >> 20, node.name, res.returncode, took,
                          res.stderr.strip()))
            check(res.returncode == 1 and want in res.stderr,
                  "ltxfs import to %s: exit %d, %r (want %r)"
                  % (node.name, res.returncode, res.stderr, want))
        os.unlink(big)
        # An import that should pass still does, and replicates.
        data = small_db(os.path.join(p.root, "small.db"))
        st, body = ch.http(p.url + "/import?db=small.db", method="POST",
                           token=TOKEN, data=data)
        check(st == 200, "a valid import answered %d: %r" % (st, body))
        cl.wait_synced("small.db", timeout=30)
        c = h.connect(r.path("small.db"))
        got = h.one(c, "SELECT a FROM t")
        c.close()
        check(got == "imported", "the replica's import reads %r" % got)
        print("import: a valid import replicated")


def case_stream():
    with ch.Cluster(2, token=TOKEN) as cl:
        cl.start()
        p = cl.primary
        node = "0123456789abcdef"
        cl_len = "Content-Length: %d\r\n" % BODY
        early_answer(p, head_of("GET", "/stream?node=%s" % node, "wrong",
                                cl_len),
                     "GET /stream, wrong token, Content-Length", 401)
        early_answer(p, head_of("GET", "/stream?node=%s" % node, "wrong",
                                "Transfer-Encoding: chunked\r\n"),
                     "GET /stream, wrong token, chunked", 401, chunked=True)
        text = early_answer(p, head_of("GET", "/stream?node=%s" % node, TOKEN,
                                       cl_len),
                            "GET /stream, right token, a body", 413)
        check("takes no request body" in text, "413 without the reason: %r"
              % text)
        early_answer(p, head_of("POST", "/stream?node=%s" % node, TOKEN,
                                cl_len),
                     "POST /stream, right token, a body", 405)
        info = p.info()
        other = "%016x" % (int(info["cluster"], 16) ^ 1)
        st, body = p.get("/stream?node=%s&cluster=%s" % (node, other),
                         timeout=10)
        check(st == 409, "GET /stream of another cluster: %d %r"
              % (st, body))
        print("stream: another cluster's replica: %d %s"
              % (st, body.decode().strip()))


def open_count(socks, wait):
    """How many of socks the server has not closed, after up to wait
    seconds of watching them (a closed one reads EOF or an error)."""
    alive = set(socks)
    end = time.monotonic() + wait
    while alive and time.monotonic() < end:
        r, _, _ = select.select(list(alive), [], [], 0.1)
        for s in r:
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            if not d:
                alive.discard(s)
    return len(alive)


def info_from(node, source, timeout=10):
    """GET /info from a given loopback source address; returns the
    status."""
    c = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout,
                                   source_address=(source, 0))
    try:
        c.request("GET", "/info", headers={"Authorization": "Bearer " +
                                           TOKEN})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def case_idle():
    with ch.Cluster(1, token=TOKEN) as cl:
        cl.start()
        p = cl.primary
        # An authenticated keep-alive connection, idle past the
        # pre-authentication timeout below.
        keep = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10,
                                          source_address=("127.0.0.3", 0))
        keep.request("GET", "/info", headers={"Authorization": "Bearer " +
                                              TOKEN})
        r = keep.getresponse()
        r.read()
        check(r.status == 200, "/info on the keep-alive connection: %d"
              % r.status)
        keep_port = keep.sock.getsockname()[1]
        socks = []
        try:
            t0 = time.monotonic()
            for i in range(120):
                s = socket.create_connection(("127.0.0.1", p.port),
                                             timeout=5)
                if i % 2:   # half a request line, never finished
                    s.sendall(b"GET /info HTTP/1.1\r\nHost: x")
                socks.append(s)
            held = open_count(socks, 2.0)
            print("idle: of 120 idle connections from 127.0.0.1 the server "
                  "keeps %d" % held)
            check(held <= PER_IP_LIMIT, "the server keeps %d idle "
                  "connections from one address (limit %d)"
                  % (held, PER_IP_LIMIT))
            check(held >= PER_IP_LIMIT // 2, "the server keeps only %d "
                  "connections from one address" % held)
            t1 = time.monotonic()
            st = info_from(p, "127.0.0.2")
            print("idle: /info from 127.0.0.2 meanwhile: %d in %.3f s"
                  % (st, time.monotonic() - t1))
            check(st == 200, "/info from 127.0.0.2 answered %d" % st)
            left = open_count(socks, PREAUTH_TIMEOUT + 10 -
                              (time.monotonic() - t0))
            took = time.monotonic() - t0
            print("idle: %d still open %.1f s after they were opened"
                  % (left, took))
            check(left == 0, "%d idle connections still open after %.1f s "
                  "(pre-authentication timeout %.0f s)"
                  % (left, took, PREAUTH_TIMEOUT))
        finally:
            for s in socks:
                s.close()
        check(info_from(p, "127.0.0.1") == 200, "/info from 127.0.0.1 "
              "after the idle connections were closed")
        # The keep-alive connection showed the token: it is still open.
        check(time.monotonic() - t0 > PREAUTH_TIMEOUT, "the test did not "
              "wait past the pre-authentication timeout")
        keep.request("GET", "/info", headers={"Authorization": "Bearer " +
                                              TOKEN})
        r = keep.getresponse()
        r.read()
        check(r.status == 200, "/info again on the authenticated "
              "keep-alive connection: %d" % r.status)
        check(keep.sock is not None and
              keep.sock.getsockname()[1] == keep_port,
              "the keep-alive connection was opened again")
        keep.close()
        print("idle: the authenticated connection outlived the "
              "pre-authentication timeout")


CASES = {"import": case_import, "stream": case_stream, "idle": case_idle}


def run():
    case = sys.argv[1] if len(sys.argv) > 1 else ""
    check(case in CASES, "usage: test_http_limits.py %s" % "|".join(CASES))
    CASES[case]()


if __name__ == "__main__":
    h.main(run)
