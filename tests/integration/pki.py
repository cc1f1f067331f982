"""A throwaway PKI made with openssl, for the TLS tests (test_etcd_tls.py,
test_tls.py).

Pki() makes ca.crt/ca.key, server.crt/key (IP:127.0.0.1 and localhost,
serverAuth and clientAuth: a node's one certificate serves and dials),
client.crt/key (clientAuth) signed by the CA, and other-ca.crt/key, a
second CA. issue() makes more: from another CA, with other dates (an
expired certificate), or another key (a mismatched pair is two issues'
files). Every openssl run has a timeout.
"""

import os
import shutil
import subprocess
import tempfile

from ltxfs_harness import check

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
SERVER_EXT = ("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
              "extendedKeyUsage=serverAuth,clientAuth\n")
CLIENT_EXT = "extendedKeyUsage=clientAuth\n"
CA_CNF = """[ca]
default_ca = ca_default
[ca_default]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
"""


def openssl(*args, cwd, stdin=None):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, input=stdin,
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "openssl %s: %s%s" % (" ".join(args), r.stdout,
                                                   r.stderr))
    return r.stdout


class Pki:
    def __init__(self):
        check(shutil.which("openssl") is not None,
              "openssl is missing (package openssl, scripts/install-deps)")
        self.dir = tempfile.mkdtemp(prefix="ltxfs-it-pki-")
        for ca in ("ca", "other-ca"):
            openssl("req", "-x509", *EC, "-keyout", ca + ".key", "-out",
                    ca + ".crt", "-days", "2", "-subj",
                    "/CN=ltxfs test %s" % ca, cwd=self.dir)
        self.issue("server", ext=SERVER_EXT)
        self.issue("client", ext=CLIENT_EXT)

    def path(self, name):
        return os.path.join(self.dir, name)

    def issue(self, name, ca="ca", ext=SERVER_EXT, start=None, end=None):
        """name.crt/name.key signed by ca; start/end as openssl's
        YYYYMMDDHHMMSSZ (both or neither; default: now for 2 days).
        Returns the path of name.crt."""
        d = self.dir
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + ext)
        openssl("req", *EC, "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=ltxfs test %s" % name, cwd=d)
        if start is None:
            openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt",
                    "-CAkey", ca + ".key", "-CAcreateserial", "-days", "2",
                    "-out", name + ".crt", "-extfile", name + ".ext", cwd=d)
            return self.path(name + ".crt")
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(CA_CNF)
        open(os.path.join(d, "index.txt"), "a").close()
        if not os.path.exists(os.path.join(d, "serial")):
            with open(os.path.join(d, "serial"), "w") as f:
                f.write("1000\n")
        openssl("ca", "-batch", "-config", "ca.cnf", "-cert", ca + ".crt",
                "-keyfile", ca + ".key", "-in", name + ".csr", "-out",
                name + ".crt", "-startdate", start, "-enddate", end,
                "-extfile", name + ".ext", "-notext", cwd=d)
        return self.path(name + ".crt")

    def fingerprint(self, name):
        """SHA-256 fingerprint of name.crt, lower-case hex, no colons."""
        out = openssl("x509", "-in", name + ".crt", "-noout", "-fingerprint",
                      "-sha256", cwd=self.dir)
        return out.strip().split("=", 1)[1].replace(":", "").lower()

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)
