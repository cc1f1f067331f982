"""etcd over TLS and the lease metrics (suite etcd).

A throwaway PKI made with openssl (a CA, a server certificate for
IP:127.0.0.1, a client certificate, and a second CA nobody uses), a real
etcd (Debian's etcd-server) serving https on a loopback port with
--client-cert-auth, and ltxfs nodes (lease.type etcd) with
lease.etcd.tls-ca-file, tls-cert-file and tls-key-file. Real processes;
every wait has a deadline.

Cases (argv[1]):
  tls      two nodes elect a primary over TLS and replicate a write; the
           lease metrics on both (primary 1 with a deadline in (0, TTL],
           replica 0, renewals going up); a node that trusts the wrong CA
           logs the certificate verification failure, counts etcd errors
           and never becomes primary, even once the others are gone (nor
           does a node without a client certificate); the
           same node with the right CA becomes primary (so the refusal
           was the CA's doing).
  config   a client certificate without its key (and the other way
           round), an unreadable CA file and TLS settings with an http://
           endpoint each stop the node at startup with a message naming
           the keys.

The etcd helpers (Etcd, EtcdNode, setup, wait_one_primary, wait_synced)
are test_etcd.py's, imported.
"""

import os
import ssl
import subprocess
import sys
import time
import urllib.request

import cluster_harness as ch
import ltxfs_harness as h
from pki import Pki
import test_etcd as te
from ltxfs_harness import TestFailure, check, wait_for


class TlsEtcd(te.Etcd):
    """test_etcd's Etcd serving clients on https only, trusting client
    certificates signed by the PKI's CA and no others."""

    def __init__(self, pki):
        super().__init__()
        self.pki = pki
        self.url = "https://127.0.0.1:%d" % self.port

    def start(self):
        check(os.access("/usr/bin/etcd", os.X_OK),
              "/usr/bin/etcd is missing (package etcd-server)")
        p = "http://127.0.0.1:%d" % self.peer
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["/usr/bin/etcd", "--data-dir", os.path.join(self.root, "d"),
             "--name", "default",
             "--listen-client-urls", self.url,
             "--advertise-client-urls", self.url,
             "--cert-file", self.pki.path("server.crt"),
             "--key-file", self.pki.path("server.key"),
             "--client-cert-auth",
             "--trusted-ca-file", self.pki.path("ca.crt"),
             "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", "default=" + p],
            stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        ctx = self.client_context()

        def up():
            if self.proc.poll() is not None:
                raise TestFailure("etcd exited with %s; see %s"
                                  % (self.proc.returncode, self.log_path))
            req = urllib.request.Request(self.url + "/v3/kv/range",
                                         data=b'{"key": "eA=="}',
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=2,
                                            context=ctx) as r:
                    return r.status == 200
            except (OSError, ValueError):
                return False
        wait_for(up, 30, "etcd to answer on %s" % self.url, interval=0.1)

    def client_context(self, cert=True):
        ctx = ssl.create_default_context(cafile=self.pki.path("ca.crt"))
        if cert:
            ctx.load_cert_chain(self.pki.path("client.crt"),
                                self.pki.path("client.key"))
        return ctx


def add_etcd_keys(node, **keys):
    """Appends keys (tls_ca_file -> tls-ca-file) to the lease.etcd
    section that EtcdNode's configuration ends with."""
    with open(node.cfg) as f:
        text = f.read()
    last = text.rstrip("\n").splitlines()[-1]
    check(last.startswith("    ") and "etcd:\n" in text,
          "EtcdNode's configuration no longer ends in lease.etcd: %r"
          % last)
    for k, v in keys.items():
        text += "    %s: %s\n" % (k.replace("_", "-"), v)
    with open(node.cfg, "w") as f:
        f.write(text)


def set_etcd_key(node, key, value):
    with open(node.cfg) as f:
        lines = f.read().splitlines()
    name = "    %s:" % key
    hits = [i for i, ln in enumerate(lines) if ln.startswith(name)]
    check(len(hits) == 1, "%s: %s appears %d times" % (node.name, key,
                                                       len(hits)))
    lines[hits[0]] = "%s %s" % (name, value)
    with open(node.cfg, "w") as f:
        f.write("\n".join(lines) + "\n")


def tls_node(name, etcd, pki, ca="ca.crt"):
    n = te.EtcdNode(name, etcd)
    add_etcd_keys(n, tls_ca_file=pki.path(ca),
                  tls_cert_file=pki.path("client.crt"),
                  tls_key_file=pki.path("client.key"))
    return n


def metrics(node):
    st, body = ch.http(node.url + "/metrics", timeout=5)
    check(st == 200, "%s: /metrics answered %d" % (node.name, st))
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


LEASE_METRICS = ["ltxfs_lease_primary", "ltxfs_lease_epoch",
                 "ltxfs_lease_deadline_seconds", "ltxfs_lease_renewals_total",
                 "ltxfs_lease_renewal_failures_total",
                 "ltxfs_lease_acquisitions_total",
                 "ltxfs_lease_etcd_errors_total"]


def lease_metrics(node):
    m = metrics(node)
    missing = [k for k in LEASE_METRICS if k not in m]
    check(not missing, "%s: /metrics lacks %s" % (node.name, missing))
    return {k: m[k] for k in LEASE_METRICS}


def check_lease_metrics(p, q):
    mp, mq = lease_metrics(p), lease_metrics(q)
    epoch = p.info()["epoch"]
    print("tls: primary %s: %r" % (p.name, mp))
    print("tls: replica %s: %r" % (q.name, mq))
    check(mp["ltxfs_lease_primary"] == 1, "primary: ltxfs_lease_primary %r"
          % mp["ltxfs_lease_primary"])
    d = mp["ltxfs_lease_deadline_seconds"]
    check(0 < d <= te.TTL, "primary: ltxfs_lease_deadline_seconds %r not "
          "in (0, %.0f]" % (d, te.TTL))
    check(mp["ltxfs_lease_epoch"] == epoch > 0, "primary: "
          "ltxfs_lease_epoch %r, /info epoch %r"
          % (mp["ltxfs_lease_epoch"], epoch))
    check(mp["ltxfs_lease_acquisitions_total"] == 1, "primary: "
          "ltxfs_lease_acquisitions_total %r"
          % mp["ltxfs_lease_acquisitions_total"])
    check(mq["ltxfs_lease_primary"] == 0 and
          mq["ltxfs_lease_deadline_seconds"] == 0 and
          mq["ltxfs_lease_acquisitions_total"] == 0 and
          mq["ltxfs_lease_renewals_total"] == 0,
          "replica: lease metrics %r" % mq)
    check(mq["ltxfs_lease_epoch"] == epoch, "replica: ltxfs_lease_epoch %r,"
          " the primary's %r" % (mq["ltxfs_lease_epoch"], epoch))
    r0 = mp["ltxfs_lease_renewals_total"]
    t0 = time.monotonic()
    # Keepalives go every TTL/3: two more within 3 TTL.
    wait_for(lambda: lease_metrics(p)["ltxfs_lease_renewals_total"] >=
             r0 + 2, 3 * te.TTL + 5, "%s: ltxfs_lease_renewals_total to go "
             "up by 2 from %d" % (p.name, r0), interval=0.1)
    m = lease_metrics(p)
    print("tls: renewals %d -> %d in %.1f s; failures %d"
          % (r0, m["ltxfs_lease_renewals_total"], time.monotonic() - t0,
             m["ltxfs_lease_renewal_failures_total"]))
    check(m["ltxfs_lease_renewal_failures_total"] == 0, "renewal failures "
          "on a healthy primary: %r" % m)


def case_tls(pki):
    etcd = TlsEtcd(pki)
    nodes = []
    try:
        etcd.start()
        # etcd itself refuses a client without a certificate.
        try:
            urllib.request.urlopen(urllib.request.Request(
                etcd.url + "/v3/kv/range", data=b'{"key": "eA=="}',
                method="POST"), timeout=5,
                context=etcd.client_context(cert=False))
            raise TestFailure("etcd answered a client without a "
                              "certificate")
        except OSError as e:
            print("tls: etcd refuses a client without a certificate: %s"
                  % str(e)[:100])
        good = [tls_node("t%d" % i, etcd, pki) for i in range(2)]
        bad = tls_node("wrongca", etcd, pki, ca="other-ca.crt")
        # Trusts the right CA but has no client certificate.
        nocert = te.EtcdNode("nocert", etcd)
        add_etcd_keys(nocert, tls_ca_file=pki.path("ca.crt"))
        nodes += good + [bad, nocert]
        p = te.setup(good)
        q = [n for n in good if n is not p][0]
        c = h.connect(p.path(te.DB))
        c.execute("INSERT INTO t(v, at) VALUES ('over tls', ?)", (p.name,))
        c.close()
        te.wait_synced(good, 30)
        c = h.connect(q.path(te.DB))
        got = h.one(c, "SELECT v FROM t WHERE at = ?", (p.name,))
        c.close()
        check(got == "over tls", "the replica reads %r" % got)
        print("tls: %s is primary over https, %s replicated the write"
              % (p.name, q.name))
        check_lease_metrics(p, q)

        for n in (bad, nocert):
            n.start()
            line = wait_for(lambda: [ln for ln in n.log_text().splitlines()
                                     if "TLS failed" in ln], 20,
                            "%s to log the TLS failure" % n.name)[0]
            print("tls: %s: %s" % (n.name, line.split("  ", 1)[-1][:400]))
            # wrongca: OpenSSL's reason; nocert: the hint (TLS 1.3 shows
            # a refused client only as a connection closed at once).
            want = "certificate problem" if n is bad else \
                "want a client certificate"
            check(want in line, "the TLS failure does not say %r: %r"
                  % (want, line))
            e = lease_metrics(n)["ltxfs_lease_etcd_errors_total"]
            check(e > 0, "%s: ltxfs_lease_etcd_errors_total %r"
                  % (n.name, e))
        e0 = lease_metrics(bad)["ltxfs_lease_etcd_errors_total"]
        # The others go (a clean stop revokes the lease): the key is
        # free, and still the node that cannot verify etcd takes nothing.
        for n in good:
            n.stop()
        end = time.monotonic() + te.TTL + 3
        polls = 0
        while time.monotonic() < end and polls < 1000:
            for n in (bad, nocert):
                check(n.role() == "replica", "%s became %s" % (n.name,
                                                             n.role()))
            polls += 1
            time.sleep(0.1)
        check(not os.path.exists(os.path.join(nocert.data, "lease.log")),
              "%s has a lease.log" % nocert.name)
        nocert.stop()
        m = lease_metrics(bad)
        check(m["ltxfs_lease_primary"] == 0 and
              m["ltxfs_lease_etcd_errors_total"] > e0,
              "%s: lease metrics %r" % (bad.name, m))
        check(not os.path.exists(os.path.join(bad.data, "lease.log")),
              "%s has a lease.log" % bad.name)
        print("tls: %s stayed a replica for %.0f s after the others "
              "stopped; etcd errors %d -> %d"
              % (bad.name, te.TTL + 3, e0,
                 m["ltxfs_lease_etcd_errors_total"]))
        # The same node trusting the right CA takes the lease.
        bad.stop()
        set_etcd_key(bad, "tls-ca-file", pki.path("ca.crt"))
        bad.start()
        wait_for(lambda: bad.role() == "primary", 20,
                 "%s with the right CA to become primary" % bad.name,
                 interval=0.1)
        print("tls: with the right CA %s became primary" % bad.name)
        bad.stop()
    except BaseException:
        for n in nodes:
            h.print_log_tail(n, 40)
        try:
            with open(etcd.log_path, "rb") as f:
                sys.stdout.write("---- etcd log tail ----\n%s\n" % f.read()
                                 [-3000:].decode("utf-8", "replace"))
        except OSError:
            pass
        raise
    finally:
        for n in nodes:
            n.close()
        etcd.close()


def case_config(pki):
    https = "https://127.0.0.1:%d" % te.free_port()
    bad = [
        ("cert-without-key", https,
         {"tls_cert_file": pki.path("client.crt")},
         "lease.etcd.tls-cert-file and lease.etcd.tls-key-file go together:"
         " lease.etcd.tls-cert-file is set but lease.etcd.tls-key-file is "
         "empty"),
        ("key-without-cert", https,
         {"tls_key_file": pki.path("client.key")},
         "lease.etcd.tls-cert-file and lease.etcd.tls-key-file go together:"
         " lease.etcd.tls-key-file is set but lease.etcd.tls-cert-file is "
         "empty"),
        ("unreadable-ca", https,
         {"tls_ca_file": pki.path("no-such-ca.crt")},
         "lease.etcd.tls-ca-file %s cannot be read: No such file or "
         "directory" % pki.path("no-such-ca.crt")),
        ("unreadable-key", https,
         {"tls_cert_file": pki.path("client.crt"),
          "tls_key_file": pki.path("no-such.key")},
         "lease.etcd.tls-key-file %s cannot be read" %
         pki.path("no-such.key")),
        ("tls-over-http", https.replace("https", "http"),
         {"tls_ca_file": pki.path("ca.crt")},
         "lease.etcd.tls-* is set but endpoint"),
    ]
    for name, ep, keys, want in bad:
        n = te.EtcdNode(name, None, endpoints=[ep])
        try:
            add_etcd_keys(n, **keys)
            st = n.start(expect_mount=False)
            check(st == "exited", "%s: the node mounted" % name)
            text = n.log_text()
            check(want in text, "%s: the log does not say %r:\n%s"
                  % (name, want, n.log_tail(10)))
            print("config: %s: %s" % (name, [ln for ln in text.splitlines()
                                             if want in ln][0]))
        finally:
            n.close()


CASES = {"tls": case_tls, "config": case_config}


def run():
    case = sys.argv[1] if len(sys.argv) > 1 else ""
    check(case in CASES, "usage: test_etcd_tls.py %s" % "|".join(CASES))
    te.TTL = float(os.environ.get("TTL", te.TTL))
    pki = Pki()
    try:
        CASES[case](pki)
    finally:
        pki.close()


if __name__ == "__main__":
    h.main(run)
