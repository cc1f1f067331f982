"""Harness for the deploy tests: the ltxfs image (deploy/Dockerfile) run
in real podman containers on a podman network.

    with Pod() as p:                      # names unique to this run
        img = p.image()                   # tests/deploy/setup.sh
        net = p.network()
        a = p.node("a", net)
        b = p.node("b", net, primary_of=a)
        p.wait_ready(a); p.wait_ready(b)
        p.sql(a, "CREATE TABLE t(id INTEGER PRIMARY KEY)")

Rules:
 1. Every container, network and volume is named <run>-<name>, <run>
    being ltxfs-t<pid>-<random>; Pod.close() (leaving the with block, even
    by an exception) removes exactly those, by name, and nothing else.
 2. Nodes run the image's own entrypoint and /etc/ltxfs.yml, configured
    only through LTXFS_* environment variables, as a user would.
 3. Every wait is a poll with a deadline (ltxfs_harness.wait_for); every
    podman command has a timeout.
 4. A missing podman is a skip (exit 77) outside CI and a failure in CI
    (CI=true), where scripts/install-deps must have installed it.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(
    __file__)), "..", "integration"))
import ltxfs_harness as h  # noqa: E402
from ltxfs_harness import TestFailure, check, wait_for  # noqa: E402,F401

HERE = os.path.dirname(os.path.abspath(__file__))
SETUP = os.path.join(HERE, "setup.sh")
CMD_TIMEOUT = 120.0      # one podman command (a run pulls nothing)
BUILD_TIMEOUT = 900.0    # setup.sh from nothing: base image and build
READY_TIMEOUT = 60.0     # container start to /readyz 200
PORT = 20202


def podman(*args, timeout=CMD_TIMEOUT, check_rc=True, input=None):
    """Runs podman ARGS; returns (rc, stdout, stderr) as text. With
    check_rc, a nonzero exit is a TestFailure naming the command."""
    p = subprocess.run(["podman"] + list(args), input=input,
                       capture_output=True, text=True, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise TestFailure("podman %s: exit %d: %s"
                          % (" ".join(args[:3]), p.returncode,
                             p.stderr.strip()[-2000:]))
    return p.returncode, p.stdout, p.stderr


class Pod:
    """The containers, networks and volumes of one test run."""

    def __init__(self):
        self.run = "ltxfs-t%d-%04x" % (os.getpid(), random.randrange(1 << 16))
        self.containers = []
        self.networks = []
        self.volumes = []
        self.img = None

    def name(self, short):
        return "%s-%s" % (self.run, short)

    # -- set-up ------------------------------------------------------

    def image(self):
        """Builds (or finds cached) the image of this source tree."""
        if self.img:
            return self.img
        t0 = time.monotonic()
        p = subprocess.run(["bash", SETUP], capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT)
        if p.returncode != 0:
            raise TestFailure("setup.sh: exit %d: %s"
                              % (p.returncode, p.stderr.strip()[-3000:]))
        self.img = p.stdout.strip().splitlines()[-1]
        print("  image %s ready in %.1fs" % (self.img,
                                              time.monotonic() - t0))
        return self.img

    def network(self, short="net", subnet=None):
        n = self.name(short)
        podman(*(["network", "create"] + (["--subnet", subnet] if subnet
                                          else []) + [n]))
        self.networks.append(n)
        return n

    def volume(self, short):
        v = self.name(short)
        podman("volume", "create", v)
        self.volumes.append(v)
        return v

    # -- containers --------------------------------------------------

    def run_container(self, short, args, image_args=(), fuse=True):
        """podman run -d of the image as container <run>-short, with
        /dev/fuse and SYS_ADMIN when fuse. Returns its name."""
        c = self.name(short)
        cmd = ["run", "-d", "--name", c, "--hostname", short, "--init",
               "--no-healthcheck"]
        if fuse:
            cmd += ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"]
        if c not in self.containers:
            self.containers.append(c)
        podman(*(cmd + list(args) + [self.image()] + list(image_args)))
        return c

    def node(self, short, net, primary_of=None, env=None, volume=None,
             image_args=(), ip=None):
        """An ltxfs node: its own volume on /var/lib/ltxfs, on network
        net, reached by the others at http://<container>:20202. A replica
        (primary_of=node) follows that node with the static lease. ip:
        its address on net (podman run --ip)."""
        c = self.name(short)
        vol = volume or self.volume(short + "-data")
        e = {"LTXFS_ADVERTISE_URL": "http://%s:%d" % (c, PORT),
             "LTXFS_HOSTNAME": c, "LTXFS_LOG_LEVEL": "info"}
        if primary_of:
            e["LTXFS_CANDIDATE"] = "false"
            e["LTXFS_PRIMARY_URL"] = "http://%s:%d" % (primary_of, PORT)
        e.update(env or {})
        args = ["--network", net, "-v", "%s:/var/lib/ltxfs" % vol]
        if ip:
            args += ["--ip", ip]
        for k, v in sorted(e.items()):
            args += ["-e", "%s=%s" % (k, v)]
        return self.run_container(short, args, image_args)

    def running(self, c):
        rc, out, _ = podman("inspect", "-f", "{{.State.Running}}", c,
                            check_rc=False)
        return rc == 0 and out.strip() == "true"

    def ip(self, c):
        """The container's address on its network ("" when not running);
        reachable from this host (root podman's bridge)."""
        rc, out, _ = podman("inspect", "-f", "{{range .NetworkSettings."
                            "Networks}}{{.IPAddress}}{{end}}", c,
                            check_rc=False)
        return out.strip() if rc == 0 else ""

    def exec(self, c, *cmd, timeout=CMD_TIMEOUT, check_rc=True, input=None):
        return podman(*(["exec", "-i", c] + list(cmd)), timeout=timeout,
                      check_rc=check_rc, input=input)

    def readyz(self, c):
        """(HTTP status, body) of the node's GET /readyz, from inside the
        container; (0, why) when it did not answer."""
        rc, out, err = self.exec(
            c, "curl", "-sS", "-m", "5", "-w", "\n%{http_code}",
            "http://127.0.0.1:%d/readyz" % PORT, check_rc=False, timeout=30)
        if rc != 0:
            return 0, (err or out).strip()
        body, _, code = out.rpartition("\n")
        return int(code), body.strip()

    def wait_ready(self, c, timeout=READY_TIMEOUT):
        def ready():
            if not self.running(c):
                raise TestFailure("%s exited:\n%s" % (c, self.logs(c)))
            return self.readyz(c)[0] == 200
        wait_for(ready, timeout, "%s /readyz 200" % c, interval=0.2)

    def sql(self, c, sql, db="app.db", timeout=60):
        """Runs sql with the sqlite3 CLI in container c on its mount;
        returns stdout (rows, '|' separated)."""
        _, out, _ = self.exec(c, "sqlite3", "-cmd", ".timeout 10000",
                              "/litefs/" + db, sql, timeout=timeout)
        return out

    def logs(self, c, tail=80):
        rc, out, err = podman("logs", "--tail", str(tail), c,
                              check_rc=False, timeout=30)
        return out + err

    def stop(self, c, timeout=30):
        """podman stop (SIGTERM to PID 1, catatonit, which passes it on);
        returns the container's exit code."""
        podman("stop", "-t", str(timeout), c, timeout=timeout + 30)
        _, out, _ = podman("inspect", "-f", "{{.State.ExitCode}}", c)
        return int(out.strip())

    # -- clean-up ----------------------------------------------------

    def anonymous_volumes(self, c):
        """The volumes of container c that are not the run's own (the
        image's VOLUME when no -v names one)."""
        rc, out, _ = podman("inspect", "-f", "{{range .Mounts}}{{.Name}} "
                            "{{end}}", c, check_rc=False)
        return [v for v in out.split() if v not in self.volumes] \
            if rc == 0 else []

    def close(self):
        errs = []
        anon = []
        for c in reversed(self.containers):
            anon += self.anonymous_volumes(c)
            rc, _, err = podman("rm", "-f", "-v", "-t", "0", c,
                                check_rc=False,
                                timeout=60)
            if rc != 0 and "no such container" not in err.lower():
                errs.append("rm %s: %s" % (c, err.strip()))
        for v in anon:
            if podman("volume", "exists", v, check_rc=False)[0] == 0:
                errs.append("anonymous volume %s left" % v)
        for v in self.volumes:
            rc, _, err = podman("volume", "rm", "-f", v, check_rc=False)
            if rc != 0:
                errs.append("volume rm %s: %s" % (v, err.strip()))
        for n in self.networks:
            rc, _, err = podman("network", "rm", "-f", n, check_rc=False)
            if rc != 0:
                errs.append("network rm %s: %s" % (n, err.strip()))
        self.containers, self.volumes, self.networks = [], [], []
        check(not errs, "clean-up: " + "; ".join(errs))

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            for c in self.containers:
                print("---- podman logs %s ----" % c)
                print(self.logs(c))
        self.close()
        return False


def need_podman():
    missing = [t for t in ("podman", "runc", "mmdebstrap")
               if shutil.which(t) is None]
    if not missing:
        return
    msg = "%s not installed (scripts/install-deps)" % ", ".join(missing)
    if os.environ.get("CI") == "true":
        raise TestFailure(msg)
    print("SKIP: " + msg)
    sys.exit(77)


def main(fn):
    """Runs fn() as a test program: 0 ok, 1 failed (with the traceback),
    77 skipped (rule 4)."""
    t0 = time.monotonic()
    rc = 0

    def on_term(signum, frame):
        # meson's timeout: fail, but through the clean-up of the with.
        raise TestFailure("terminated by signal %d (test timeout?)"
                          % signum)
    signal.signal(signal.SIGTERM, on_term)
    try:
        need_podman()
        fn()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        rc = 1
    print("%s: %s in %.1fs" % (os.path.basename(sys.argv[0]),
                               "FAIL" if rc else "ok",
                               time.monotonic() - t0))
    sys.stdout.flush()
    sys.exit(rc)
