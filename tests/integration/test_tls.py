"""TLS on the node API, mutual TLS, scoped tokens, reloads and SIGHUP
(suite cluster).

Certificates come from a throwaway PKI made with openssl (pki.py); nodes
are real daemons on real FUSE mounts with their API on 127.0.0.1 ports
(cluster_harness.py); the etcd lease (tls-cluster) is a real etcd
(test_etcd.py's Etcd). Every wait has a deadline.

Cases (argv[1]):
  sighup       SIGHUP to a primary and a replica without TLS and without
               an application: both go on serving ("SIGHUP: nothing to
               reload") and a write still replicates. On main, SIGHUP
               stopped the daemon.
  tls-cluster  three nodes (etcd lease) over HTTPS with mutual TLS and a
               token: replication, ltxfs export and import, ltxfs
               promote (a handoff), byte-identical replicas.
  tls-config   each bad TLS configuration is refused at start with one
               line naming the key: a missing file, a key that is not the
               certificate's, an expired and a not-yet-valid certificate
               (with their dates), a key without its certificate, a
               client CA without a certificate, a metrics token without
               the cluster token, and a key that would skip verification
               (no such key exists).
  tls-mtls     a replica whose certificate another CA signed, and one
               with no certificate, are refused (403) with a log line
               naming the peer and why, and never get a database; a
               replica that does not trust the primary's CA says why; a
               plain-HTTP client gets a clear error.
  tls-scoped   the metrics token reads /metrics and /info and gets 401 on
               /export, /import, /stream, /handoff, /promote; the cluster
               token reads all; metrics-auth none serves /metrics and
               /info without a token and nothing else.
  tls-rotate   the primary's certificate and key are replaced: within
               the file check (about a second) new connections get the
               new certificate (its SHA-256 seen by openssl s_client),
               the replica's stream is the same connection and goes on
               replicating; again with SIGHUP; a bad pair is refused and
               the old certificate stays.
  tls-garbage  random bytes, truncated TLS handshakes and oversized
               records to the HTTPS port, from many connections: the
               node keeps serving its replica and /healthz, its RSS stays
               within a bound, libmicrohttpd's lines are rate-limited.
"""

import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time

import cluster_harness as ch
import ltxfs_harness as h
import test_etcd as te
from ltxfs_harness import TestFailure, check, wait_for
from pki import Pki

TOKEN = "tls-test-token"
MTOKEN = "metrics-only-token"
DB = "t.db"


def write_rows(node, n, db=DB, start=0):
    c = h.connect(node.path(db))
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v)")
    for i in range(n):
        c.execute("INSERT INTO t(v) VALUES (?)", ("row %d" % (start + i),))
        c.commit()
    c.close()


def mtls(pki, cert="server", ca="ca.crt"):
    """Every node's Tls: its certificate serves and dials (serverAuth
    and clientAuth); the client CA and the trusted CA are ca."""
    return ch.Tls(pki.path(cert + ".crt"), pki.path(cert + ".key"),
                  pki.path(ca), client_ca=pki.path(ca),
                  client_cert=pki.path(cert + ".crt"),
                  client_key=pki.path(cert + ".key"))


def run_cli(*args, timeout=60):
    return subprocess.run([h.ltxfs_bin()] + list(args), capture_output=True,
                          text=True, timeout=timeout)


# -- sighup ---------------------------------------------------------------

def case_sighup():
    with ch.Cluster(2) as cl:
        cl.start()
        write_rows(cl.primary, 3)
        cl.wait_synced(DB)
        for n in cl.nodes:
            role = "primary" if n.is_primary else "replica"
            mark = len(n.log_text())
            n.proc.send_signal(signal.SIGHUP)

            def outcome():
                if "SIGHUP: nothing to reload" in n.log_text()[mark:]:
                    return "went on"
                return None if n.running() else "stopped"
            st = wait_for(outcome, 10, "%s: SIGHUP handled" % n.name)
            check(st == "went on", "the %s stopped on SIGHUP" % role)
            check(n.healthy(), "%s: /healthz after SIGHUP" % n.name)
        write_rows(cl.primary, 2, start=3)
        cl.wait_synced(DB)
        print("sighup: primary and replica went on serving; a write "
              "after it replicated")


# -- tls-cluster ----------------------------------------------------------

def case_tls_cluster():
    pki = Pki()
    etcd = te.Etcd()
    tls = mtls(pki)
    nodes = []
    try:
        etcd.start()
        nodes = [te.EtcdNode("n%d" % i, etcd, tls=tls, token=TOKEN)
                 for i in range(3)]
        p = te.setup(nodes)
        check(p.url.startswith("https://"), "not https: %s" % p.url)
        write_rows(p, 20)
        te.wait_synced(nodes, 30)
        for n in nodes:
            i = n.info()
            check(i and i["primary"].startswith("https://"),
                  "%s: primary URL %r" % (n.name, i and i["primary"]))
        # export from a replica, import on the primary, over mTLS with
        # the node's own configuration (its client certificate).
        r = [n for n in nodes if n is not p][0]
        out = os.path.join(pki.dir, "export.db")
        res = run_cli("export", "-c", r.cfg, DB, out)
        check(res.returncode == 0, "export: %s" % res.stderr)
        c = h.connect(out)
        check(h.one(c, "SELECT count(*) FROM t") == 20, "export rows")
        c.execute("INSERT INTO t(v) VALUES ('imported')")
        c.commit()
        c.close()
        res = run_cli("import", "-c", p.cfg, "imp.db", out)
        check(res.returncode == 0, "import: %s" % res.stderr)
        # promote: the replica asks the primary for a handoff over mTLS.
        res = run_cli("promote", "-c", r.cfg)
        check(res.returncode == 0, "promote: %s%s"
              % (res.stdout, res.stderr))
        newp = te.wait_one_primary(nodes, 20)
        check(newp is r, "%s is primary, not the promoted %s"
              % (newp.name, r.name))
        write_rows(newp, 5, start=20)
        te.wait_synced(nodes, 30)
        digests = {}
        for db in (DB, "imp.db"):
            for n in nodes:
                wait_for(lambda: os.path.exists(n.path(db)), 30,
                         "%s: %s" % (n.name, db))
            want = newp.settled_pos(db)
            for n in nodes:
                wait_for(lambda: n.pos_or_none(db) == want, 30,
                         "%s: %s at %s" % (n.name, db, want))
            for n in nodes:
                digests[(n.name, db)] = h.content_digest(
                    n.path(db), ro=n is not newp)
            check(len({digests[(n.name, db)] for n in nodes}) == 1,
                  "%s differs between nodes: %r" % (db, digests))
        for n in nodes:
            n.stop()
        files = {n.name: ch.file_digest(os.path.join(n.data, "dbs", DB,
                                                      "database"))
                 for n in nodes}
        check(len(set(files.values())) == 1,
              "database files not byte-identical: %r" % files)
        print("tls-cluster: 3 nodes over HTTPS + mTLS: replication, "
              "export, import, promote (handoff to %s), byte-identical "
              "database files" % r.name)
    finally:
        for n in nodes:
            n.close()
        etcd.close()
        pki.close()


# -- tls-config -----------------------------------------------------------

def refused(pki, http_yml, want, what):
    """A node with these http keys must exit before mounting, its log
    holding every string of want."""
    n = h.Node(name="cfg", extra_yml="http:\n  addr: 127.0.0.1:%d\n%s"
               % (h.free_port(), http_yml))
    try:
        st = n.start(expect_mount=False)
        check(st == "exited", "%s: the node started (%s)" % (what, st))
        text = n.log_text()
        for w in want:
            check(w in text, "%s: %r not in the log:\n%s"
                  % (what, w, n.log_tail(10)))
        line = [ln for ln in text.splitlines() if want[0] in ln][0]
        print("tls-config: %s: %s" % (what, line.strip()[:200]))
    finally:
        n.close()


def case_tls_config():
    pki = Pki()
    try:
        s, k = pki.path("server.crt"), pki.path("server.key")
        ck = pki.path("client.key")
        exp = pki.issue("expired", start="20200101000000Z",
                        end="20200102000000Z")
        fut = pki.issue("future", start="20990101000000Z",
                        end="20990102000000Z")
        cases = [
            ("missing certificate",
             "  tls-cert-file: %s/nope.crt\n  tls-key-file: %s\n"
             % (pki.dir, k), ["http.tls-cert-file", "nope.crt",
                              "No such file"]),
            ("key of another certificate",
             "  tls-cert-file: %s\n  tls-key-file: %s\n" % (s, ck),
             ["http.tls-key-file", "does not match the certificate",
              "http.tls-cert-file"]),
            ("expired certificate",
             "  tls-cert-file: %s\n  tls-key-file: %s\n"
             % (exp, pki.path("expired.key")),
             ["http.tls-cert-file", "expired on 2020-01-02T00:00:00Z",
              "valid from 2020-01-01T00:00:00Z"]),
            ("certificate not yet valid",
             "  tls-cert-file: %s\n  tls-key-file: %s\n"
             % (fut, pki.path("future.key")),
             ["http.tls-cert-file", "not valid before "
              "2099-01-01T00:00:00Z"]),
            ("certificate without key",
             "  tls-cert-file: %s\n" % s,
             ["http.tls-cert-file is set but http.tls-key-file is empty"]),
            ("client CA without certificate",
             "  tls-client-ca-file: %s\n" % pki.path("ca.crt"),
             ["http.tls-client-ca-file is set but http.tls-cert-file"]),
            ("client certificate without key",
             "  tls-client-cert-file: %s\n" % pki.path("client.crt"),
             ["http.tls-client-cert-file is set but "
              "http.tls-client-key-file"]),
            ("client key of another certificate",
             "  tls-client-cert-file: %s\n  tls-client-key-file: %s\n"
             % (pki.path("client.crt"), k),
             ["http.tls-client-key-file", "does not match"]),
            ("unreadable CA",
             "  tls-ca-file: %s/nope-ca.crt\n" % pki.dir,
             ["http.tls-ca-file", "nope-ca.crt"]),
            ("metrics token without the cluster token",
             "  metrics-token: m\n",
             ["http.metrics-token is set but http.token is empty"]),
            ("verification cannot be turned off",
             "  tls-insecure-skip-verify: true\n",
             ["tls-insecure-skip-verify"]),
        ]
        for what, yml, want in cases:
            refused(pki, yml, want, what)
    finally:
        pki.close()


# -- tls-mtls -------------------------------------------------------------

def case_tls_mtls():
    pki = Pki()
    try:
        pki.issue("rogue", ca="other-ca")
        tls = mtls(pki)
        with ch.Cluster(1, token=TOKEN, tls=tls) as cl:
            cl.start()
            write_rows(cl.primary, 3)
            p = cl.primary
            # The rogue trusts the right CA (it verifies the primary)
            # but its client certificate is the other CA's.
            rogue = cl.add_replica(token=TOKEN, name="rogue", tls=ch.Tls(
                pki.path("server.crt"), pki.path("server.key"),
                pki.path("ca.crt"), client_cert=pki.path("rogue.crt"),
                client_key=pki.path("rogue.key")))
            nocert = cl.add_replica(token=TOKEN, name="nocert", tls=ch.Tls(
                pki.path("server.crt"), pki.path("server.key"),
                pki.path("ca.crt")))
            distrust = cl.add_replica(token=TOKEN, name="distrust",
                                      tls=ch.Tls(pki.path("server.crt"),
                                                 pki.path("server.key"),
                                                 pki.path("other-ca.crt")))
            # The harness itself trusts the right CA.
            distrust.ssl = ch.Tls(None, None, pki.path("ca.crt")).context()
            for r in (rogue, nocert, distrust):
                r.start()
            p.wait_log(r"refused GET /stream\S* from 127\.0\.0\.1:\d+: "
                       r"client certificate: .*issuer is unknown", 20,
                       "the primary's refusal of the rogue")
            p.wait_log(r"refused GET /stream\S* from 127\.0\.0\.1:\d+: "
                       r"no client certificate", 20,
                       "the primary's refusal of the replica without a "
                       "certificate")
            rogue.wait_log(r"403", 20, "the rogue's log of the 403")
            distrust.wait_log(r"certificate.*(verif|not signed by "
                              r"http.tls-ca-file)", 20,
                              "the distrusting replica's reason")
            for r in (rogue, nocert, distrust):
                check(not os.path.exists(os.path.join(r.data, "dbs", DB)),
                      "%s got the database" % r.name)
                check(r.metric("ltxfs_stream_connected") == 0,
                      "%s: connected" % r.name)
            check(p.metric("ltxfs_http_unauthorized_total") >= 2,
                  "refusals not counted")
            # A plain-HTTP client to the HTTPS port.
            plain = p.url.replace("https://", "http://")
            res = run_cli("export", "--url", plain, DB,
                          os.path.join(pki.dir, "x.db"))
            check(res.returncode != 0 and "https://" in res.stderr,
                  "plain-HTTP export: %d %s" % (res.returncode, res.stderr))
            print("tls-mtls: plain HTTP client: %s" % res.stderr.strip())
            for line in p.log_text().splitlines():
                if "refused GET /stream" in line:
                    print("tls-mtls: %s" % line[25:200])
    finally:
        pki.close()


# -- tls-scoped -----------------------------------------------------------

def case_tls_scoped():
    pki = Pki()
    try:
        tls = ch.Tls(pki.path("server.crt"), pki.path("server.key"),
                     pki.path("ca.crt"))
        yml = "  metrics-token: %s\n" % MTOKEN
        with ch.Cluster(1, token=TOKEN, tls=tls, http_yml=yml) as cl:
            cl.start()
            write_rows(cl.primary, 2)
            p = cl.primary
            for path in ("/metrics", "/info"):
                st, _ = p.get(path, token=MTOKEN)
                check(st == 200, "metrics token on %s: %d" % (path, st))
            for meth, path in (("GET", "/export?db=" + DB),
                               ("POST", "/import?db=x.db"),
                               ("GET", "/stream?node=00000000000000aa"),
                               ("POST", "/handoff"), ("POST", "/promote"),
                               ("GET", "/nope")):
                st, body = p.get(path, token=MTOKEN, method=meth,
                                 data=b"" if meth == "POST" else None)
                check(st == 401, "metrics token on %s %s: %d %r"
                      % (meth, path, st, body))
            st, body = p.get("/export?db=" + DB)
            check(st == 200 and body[:16] == b"SQLite format 3\0",
                  "cluster token on /export: %d" % st)
            st, _ = p.get("/metrics", token="")
            check(st == 401, "/metrics without a token: %d" % st)
        with ch.Cluster(1, token=TOKEN, tls=tls,
                        http_yml="  metrics-auth: none\n") as cl:
            cl.start()
            p = cl.primary
            for path in ("/metrics", "/info"):
                st, _ = ch.http(p.url + path, context=p.ssl)
                check(st == 200, "metrics-auth none: %s: %d" % (path, st))
            st, _ = ch.http(p.url + "/export?db=" + DB, context=p.ssl)
            check(st == 401, "metrics-auth none: /export: %d" % st)
        print("tls-scoped: the metrics token reads /metrics and /info, "
              "401 elsewhere; metrics-auth none opens those two only")
    finally:
        pki.close()


# -- tls-rotate -----------------------------------------------------------

def served_fingerprint(port, ca):
    """SHA-256 of the certificate a new connection gets, by openssl
    s_client."""
    r = subprocess.run(["openssl", "s_client", "-connect",
                        "127.0.0.1:%d" % port, "-CAfile", ca,
                        "-verify_return_error"],
                       input="", capture_output=True, text=True, timeout=20)
    check("-----BEGIN CERTIFICATE-----" in r.stdout,
          "s_client: %s" % r.stderr[-300:])
    x = subprocess.run(["openssl", "x509", "-noout", "-fingerprint",
                        "-sha256"], input=r.stdout, capture_output=True,
                       text=True, timeout=20)
    return x.stdout.strip().split("=", 1)[1].replace(":", "").lower()


def replace_pair(pki, name, cert_dst, key_dst):
    """name.crt/key over the files in use, each by rename (as a
    Kubernetes Secret volume swaps its files)."""
    for src, dst in ((pki.path(name + ".key"), key_dst),
                     (pki.path(name + ".crt"), cert_dst)):
        tmp = dst + ".tmp"
        with open(src, "rb") as f, open(tmp, "wb") as g:
            g.write(f.read())
        os.rename(tmp, dst)


def case_tls_rotate():
    pki = Pki()
    try:
        live_c, live_k = pki.path("live.crt"), pki.path("live.key")
        replace_pair(pki, "server", live_c, live_k)
        tls = mtls(pki)
        ptls = ch.Tls(live_c, live_k, pki.path("ca.crt"),
                      client_ca=pki.path("ca.crt"),
                      client_cert=pki.path("server.crt"),
                      client_key=pki.path("server.key"))
        with ch.Cluster(1, token=TOKEN, tls=ptls) as cl:
            cl.add_replica(token=TOKEN, tls=tls)
            cl.start()
            p, r = cl.primary, cl.replicas[0]
            write_rows(p, 5)
            cl.wait_synced(DB)
            ca = pki.path("ca.crt")
            fp0 = served_fingerprint(p.port, ca)
            check(fp0 == pki.fingerprint("server"), "first certificate")
            rc0 = r.metric("ltxfs_stream_reconnects_total", 0)
            opened0 = p.log_count(r"stream to replica .* opened")
            # 1. the file check
            pki.issue("second")
            mark = len(p.log_text())
            replace_pair(pki, "second", live_c, live_k)
            p.wait_log(r"TLS reloaded: .*%s" % pki.fingerprint("second"),
                       10, "the reload by the file check", start=mark)
            fp1 = served_fingerprint(p.port, ca)
            check(fp1 == pki.fingerprint("second"),
                  "new connections got %s, not the second certificate"
                  % fp1)
            write_rows(p, 5, start=5)
            cl.wait_synced(DB)
            # 2. SIGHUP (the file check may see it first: either way
            # the new certificate must be served).
            pki.issue("third")
            mark = len(p.log_text())
            replace_pair(pki, "third", live_c, live_k)
            p.proc.send_signal(signal.SIGHUP)
            p.wait_log(r"TLS reloaded: .*%s" % pki.fingerprint("third"),
                       10, "the reload on SIGHUP", start=mark)
            check(served_fingerprint(p.port, ca) ==
                  pki.fingerprint("third"), "third certificate")
            # 3. a key that is not the certificate's: refused, the third
            # stays.
            mark = len(p.log_text())
            with open(pki.path("client.key"), "rb") as f:
                data = f.read()
            with open(live_k + ".tmp", "wb") as g:
                g.write(data)
            os.rename(live_k + ".tmp", live_k)
            p.wait_log(r"TLS reload refused", 10, "the refused reload",
                       start=mark)
            check(served_fingerprint(p.port, ca) ==
                  pki.fingerprint("third"), "the old certificate stays")
            write_rows(p, 5, start=10)
            cl.wait_synced(DB)
            check(r.metric("ltxfs_stream_reconnects_total", 0) == rc0,
                  "the replica reconnected during the rotations")
            check(p.log_count(r"stream to replica .* opened") == opened0,
                  "the primary saw a new stream")
            print("tls-rotate: %s -> %s (file check) -> %s (SIGHUP); a "
                  "bad key refused; the stream stayed one connection "
                  "and replicated 15 rows" % (fp0[:12], fp1[:12],
                                               pki.fingerprint("third")
                                               [:12]))
    finally:
        pki.close()


# -- tls-garbage ----------------------------------------------------------

def client_hello():
    """The first flight of a real TLS client (a ClientHello record)."""
    ctx = ssl.create_default_context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure("no VmRSS")


def garbage_round(port, rnd, hello):
    """One connection with one kind of garbage; returns its kind."""
    kind = rnd.choice(["random", "cut-hello", "huge-record", "hello-junk",
                       "plain-http"])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if kind == "random":
            s.sendall(rnd.randbytes(rnd.randint(1, 4096)))
        elif kind == "cut-hello":
            s.sendall(hello[:rnd.randint(1, len(hello) - 1)])
        elif kind == "huge-record":
            s.sendall(b"\x16\x03\x01\xff\xff" + rnd.randbytes(100))
        elif kind == "hello-junk":
            s.sendall(hello + rnd.randbytes(rnd.randint(1, 2048)))
        else:
            s.sendall(b"GET /export?db=t.db HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(0.05)
        try:
            s.recv(4096)
        except (socket.timeout, OSError):
            pass
    except OSError:
        pass
    finally:
        s.close()
    return kind


def case_tls_garbage():
    pki = Pki()
    try:
        tls = mtls(pki)
        with ch.Cluster(2, token=TOKEN, tls=tls) as cl:
            cl.start()
            p = cl.primary
            write_rows(p, 5)
            cl.wait_synced(DB)
            rnd = random.Random(int(os.environ.get("LTXFS_SEED", "16")))
            hello = client_hello()
            rss0 = rss_kib(p.pid())
            mark = len(p.log_text())
            kinds = {}
            t0 = time.monotonic()
            n = 0
            while n < 600 and time.monotonic() - t0 < 45:
                k = garbage_round(p.port, rnd, hello)
                kinds[k] = kinds.get(k, 0) + 1
                n += 1
                if n % 150 == 0:
                    check(p.healthy(), "/healthz during the garbage")
                    write_rows(p, 1, start=100 + n)
            took = time.monotonic() - t0
            cl.wait_synced(DB)
            check(p.running(), "the primary died")
            rss1 = rss_kib(p.pid())
            check(rss1 - rss0 < 64 * 1024,
                  "RSS grew from %d to %d KiB" % (rss0, rss1))
            check(cl.replicas[0].metric("ltxfs_stream_reconnects_total",
                                        0) == 0,
                  "the replica's stream was cut")
            lines = [ln for ln in p.log_text()[mark:].splitlines()
                     if "libmicrohttpd:" in ln]
            check(len(lines) <= 10 * (took + 2),
                  "%d libmicrohttpd lines in %.1f s: not rate-limited"
                  % (len(lines), took))
            print("tls-garbage: %d connections (%s) in %.1f s; served "
                  "throughout; RSS %d -> %d KiB; %d libmicrohttpd lines"
                  % (n, json.dumps(kinds, sort_keys=True), took, rss0,
                     rss1, len(lines)))
            if lines:
                print("tls-garbage: e.g. %s" % lines[0][25:200])
    finally:
        pki.close()


CASES = {
    "sighup": case_sighup,
    "tls-cluster": case_tls_cluster,
    "tls-config": case_tls_config,
    "tls-mtls": case_tls_mtls,
    "tls-scoped": case_tls_scoped,
    "tls-rotate": case_tls_rotate,
    "tls-garbage": case_tls_garbage,
}


def run():
    case = sys.argv[1] if len(sys.argv) > 1 else ""
    check(case in CASES, "usage: test_tls.py %s" % "|".join(CASES))
    CASES[case]()


if __name__ == "__main__":
    h.main(run)
