"""The ltxfs image in real podman containers (podman_harness.py). One
meson test per subcommand:

    image      the image builds (setup.sh) and its size is printed;
               `ltxfs version` runs in it; its config is the HEALTHCHECK
               on /healthz, the entrypoint `ltxfs mount` and the volume
               /var/lib/ltxfs; a container from it with nothing but
               --device /dev/fuse --cap-add SYS_ADMIN becomes ready and its
               HEALTHCHECK passes
    bad-input  a container without --device /dev/fuse, and one without
               --cap-add SYS_ADMIN, exit at once (<= 10 s), nonzero, with
               one line naming what is missing and the podman option;
               a replica whose primary's name resolves nowhere stays
               unready (503 and the reason) and logs it every few seconds,
               not in a hot loop (<= 10 lines in 10 s)
    static     3 containers on a podman network, each with its own volume,
               node 0 primary (static lease), replicas by container name;
               a writer in the primary records acknowledged ids outside;
               both replicas' readers see them; `podman stop` (SIGTERM) of
               the primary during writes: every acknowledged id is on both
               replicas; the primary recreated on another IP address (as a
               rescheduled pod is): the replicas follow it again (they
               resolve its name anew) and have its new rows
    seed       two application containers on one host, each its own ltxfs
               mount and volume, the application supervised by ltxfs
               (`ltxfs mount -- sh -c APP`); writes of both applications'
               users go to the primary's, reads are served by each
               container's own mount; WAL mode, concurrent writers and
               readers; both containers have every row, integrity ok
"""

import json
import random
import subprocess
import sys
import threading
import time

import podman_harness as ph
from podman_harness import Pod, TestFailure, check, podman, wait_for

APP_DB = "/litefs/app.db"


def one_line_exit(p, c, want):
    """Container c must exit within 10 s, nonzero, its output one line
    holding every string of want."""
    deadline = time.monotonic() + 10
    while p.running(c) and time.monotonic() < deadline:
        time.sleep(0.1)
    check(not p.running(c), "%s still runs after 10 s" % c)
    _, out, _ = podman("inspect", "-f", "{{.State.ExitCode}}", c)
    logs = p.logs(c).strip().splitlines()
    print("  %s: exit %s: %s" % (c, out.strip(), logs))
    check(int(out) != 0, "%s exited 0" % c)
    check(len(logs) == 1, "%s printed %d lines, not one" % (c, len(logs)))
    for w in want:
        check(w in logs[0], "%s's line does not say %r" % (c, w))


def t_image():
    with Pod() as p:
        img = p.image()
        _, out, _ = podman("image", "inspect", "-f", "{{.Size}}", img)
        print("  image size: %.0f MB" % (int(out) / 1e6))
        _, out, _ = podman("run", "--rm", "--no-healthcheck",
                           "--entrypoint", "ltxfs", img, "version")
        check(out.startswith("ltxfs "), "ltxfs version said %r" % out)
        _, out, _ = podman("image", "inspect", img)
        conf = json.loads(out)[0]["Config"]
        hc = json.loads(out)[0]["Healthcheck"]["Test"]
        check(hc[0] == "CMD-SHELL", "HEALTHCHECK %s" % hc)
        ep = conf["Entrypoint"]
        vol = conf.get("Volumes") or {}
        check("/healthz" in hc[1], "HEALTHCHECK %s" % hc)
        check(ep == ["ltxfs", "mount"], "entrypoint %s" % ep)
        check("/var/lib/ltxfs" in vol, "volumes %s" % vol)
        # The default /etc/ltxfs.yml loads with no variable set.
        _, out, _ = podman("run", "--rm", "--no-healthcheck",
                           "--entrypoint", "ltxfs", img, "config")
        check("dir: \"/litefs\"" in out and "type: static" in out,
              "ltxfs config in the image:\n%s" % out)
        net = p.network()
        c = p.node("solo", net, volume=p.volume("solo-data"))
        p.wait_ready(c)
        # The image's HEALTHCHECK command, run as podman would (the
        # harness turns podman's timers off: they need systemd).
        rc, out, err = p.exec(c, "/bin/sh", "-c", hc[1], check_rc=False)
        check(rc == 0, "HEALTHCHECK: exit %d %s%s" % (rc, out, err))
        p.sql(c, "CREATE TABLE t(x); INSERT INTO t VALUES(1);")
        check(p.sql(c, "SELECT count(*) FROM t").strip() == "1",
              "row not read back")
        check(p.stop(c) == 0, "SIGTERM: nonzero exit")


def t_bad_input():
    with Pod() as p:
        p.image()
        c = p.run_container("nodev", ["--cap-add", "SYS_ADMIN"], fuse=False)
        one_line_exit(p, c, ["/dev/fuse", "--device /dev/fuse"])
        c = p.run_container("nocap", ["--device", "/dev/fuse"], fuse=False)
        one_line_exit(p, c, ["CAP_SYS_ADMIN", "--cap-add SYS_ADMIN"])

        net = p.network()
        r = p.node("lost", net, primary_of="ltxfs-nowhere.invalid")
        wait_for(lambda: p.readyz(r)[0] == 503, 30, "%s /readyz 503" % r,
                 interval=0.2)
        t0 = time.monotonic()
        time.sleep(10)   # a fixed window over which lines are counted
        code, body = p.readyz(r)
        print("  /readyz: %d %s" % (code, body))
        check(code == 503 and body, "/readyz %d %r" % (code, body))
        check(p.running(r), "%s exited" % r)
        _, out, err = podman("logs", "--since", "%ds" % int(
            time.monotonic() - t0 + 1), r)
        lines = [l for l in (out + err).splitlines()
                 if "ltxfs-nowhere.invalid" in l]
        print("  %d log lines in ~10 s, e.g. %s" % (len(lines),
                                                    lines[-1:]))
        check(1 <= len(lines) <= 10, "%d lines about the primary in 10 s"
              % len(lines))


class Writer:
    """Inserts ids 1.. into t, one sqlite3 process per transaction, in
    container c; an id is acknowledged once its sqlite3 exited 0 and the
    shell printed it, read here outside the container."""

    def __init__(self, p, c, start, count, who="w"):
        script = ('i=%d; end=%d; while [ "$i" -lt "$end" ]; do '
                  'sqlite3 -cmd ".timeout 10000" %s '
                  '"INSERT INTO t(id, who) VALUES($i, \'%s\')" '
                  '>/dev/null 2>&1 && echo "$i"; i=$((i+1)); done'
                  % (start, start + count, APP_DB, who))
        self.acked = []
        self.proc = subprocess.Popen(
            ["podman", "exec", c, "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.acked.append(int(line))

    def wait(self, timeout=120):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TestFailure("writer still running after %ds" % timeout)
        self.thread.join(10)
        return self.acked


def ids(p, c, where=""):
    out = p.sql(c, "SELECT id FROM t %s" % where)
    return {int(x) for x in out.split()}


def t_static():
    with Pod() as p:
        p.image()
        sub = random.randrange(100, 200)
        net = p.network(subnet="10.%d.7.0/24" % sub)
        vol0 = p.volume("n0-data")
        a = p.node("n0", net, volume=vol0, ip="10.%d.7.10" % sub)
        reps = [p.node("n%d" % i, net, primary_of=a) for i in (1, 2)]
        for c in [a] + reps:
            p.wait_ready(c)
        p.sql(a, "CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT)")

        w = Writer(p, a, 1, 100000)
        wait_for(lambda: len(w.acked) >= 100, 60, "100 acknowledged writes")
        for r in reps:
            wait_for(lambda: len(ids(p, r)) >= 100, 30,
                     "%s to read 100 rows" % r, interval=0.2)
        print("  replicas read the rows; stopping the primary under writes")
        rc = p.stop(a)
        acked = set(w.wait())
        print("  primary exited %d; %d writes acknowledged" % (rc,
                                                               len(acked)))
        check(rc == 0, "primary exit code %d after SIGTERM" % rc)
        check(len(acked) >= 100, "only %d acknowledged" % len(acked))
        for r in reps:
            lost = acked - ids(p, r)
            check(not lost, "%s lost %d acknowledged ids, e.g. %s"
                  % (r, len(lost), sorted(lost)[:5]))
            check(p.sql(r, "PRAGMA integrity_check").strip() == "ok",
                  "%s integrity" % r)
        print("  both replicas hold every acknowledged id")

        # The primary recreated on another address, as a rescheduled pod
        # with the same volume and name.
        podman("rm", "-f", "-v", "-t", "0", a)
        p.node("n0", net, volume=vol0, ip="10.%d.7.20" % sub)
        p.wait_ready(a)
        check(acked <= ids(p, a), "the restarted primary lacks acked ids")
        t0 = time.monotonic()
        w = Writer(p, a, 200000, 20)
        new = set(w.wait())
        check(len(new) == 20, "%d of 20 writes after the restart"
              % len(new))
        for r in reps:
            wait_for(lambda: new <= ids(p, r, "WHERE id >= 200000"), 30,
                     "%s to follow the recreated primary" % r,
                     interval=0.2)
            p.wait_ready(r, timeout=30)
        print("  replicas follow the primary at its new address (%.1fs)"
              % (time.monotonic() - t0))


APP = r'''
echo "app: primary=${LTXFS_PRIMARY:-} primary-url=${LTXFS_PRIMARY_URL:-}"
if [ "${LTXFS_PRIMARY:-}" = 1 ]; then
  sqlite3 /litefs/app.db "PRAGMA journal_mode=WAL;
    CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT)" \
    >/dev/null || exit 3
  echo "app: schema ready"
fi
exec sleep 3600
'''


def t_seed():
    with Pod() as p:
        p.image()
        net = p.network()
        a = p.node("app-a", net, image_args=["--", "sh", "-c", APP])
        b = p.node("app-b", net, primary_of=a,
                   image_args=["--", "sh", "-c", APP])
        for c in (a, b):
            p.wait_ready(c)
        wait_for(lambda: "app: schema ready" in p.logs(a), 30,
                 "the primary's application to make its schema")
        wait_for(lambda: "app: primary= primary-url=http://%s:20202" % a
                 in p.logs(b), 30, "app-b's application with the "
                 "primary's URL in its environment")
        check(p.sql(b, "PRAGMA journal_mode").strip() == "wal",
              "app-b does not see the WAL database")
        # Both applications' users write through the primary, at once.
        wa = Writer(p, a, 1, 300, who="a")
        wb = Writer(p, a, 100001, 300, who="b")
        reads = {a: 0, b: 0}
        while wa.proc.poll() is None or wb.proc.poll() is None:
            for c in (a, b):
                n = int(p.sql(c, "SELECT count(*) FROM t").strip())
                check(n >= reads[c], "%s: rows went %d -> %d" % (
                    c, reads[c], n))
                reads[c] = n
        acked = set(wa.wait()) | set(wb.wait())
        check(len(acked) == 600, "%d of 600 writes acknowledged"
              % len(acked))
        wait_for(lambda: ids(p, b) == acked, 30,
                 "app-b's mount to have every row", interval=0.2)
        check(ids(p, a) == acked, "app-a's rows differ")
        for c in (a, b):
            check(p.sql(c, "PRAGMA integrity_check").strip() == "ok",
                  "%s integrity" % c)
        print("  both mounts have the 600 rows (reads while writing: "
              "a %d, b %d); integrity ok" % (reads[a], reads[b]))


TESTS = {"image": t_image, "bad-input": t_bad_input, "static": t_static,
         "seed": t_seed}

if __name__ == "__main__":
    ph.main(TESTS[sys.argv[1]])
