"""`exec`: ltxfs runs the application (docs/CONFIG.md, "exec"), on real
clusters of the static lease (cluster_harness.py).

    test_exec.py CASE

  migrate
      Both nodes have the same exec: an if-candidate migration (it records
      its run in the database) and the application (APP below). The
      migration runs once, on the primary, before the application; on the
      replica it is skipped, and the application starts only once the
      replica has caught up: its first query sees every row the primary
      had (a few MB, written before the replica started). Each
      application sees LTXFS_PRIMARY, LTXFS_PRIMARY_URL and LTXFS_MOUNT,
      runs in a process group of its own, and holds no descriptor of the daemon
      (/dev/fuse, the data directory, the locks). SIGTERM to ltxfs reaches
      the application first (while the mount still serves: it reads the
      database in its handler), ltxfs exits with the application's exit
      code, and the mount is gone afterwards.
  fail
      A command before the application exits 3: ltxfs stops with exit code
      3 and a message naming the command; the application never starts;
      the mount is gone.
  exit-code
      The application exits 5 by itself: ltxfs unmounts and exits 5. Given
      on the command line (`ltxfs mount -c F -- CMD ARGS`, which overrides
      exec), killed by SIGKILL: ltxfs exits 137. SIGHUP is passed on to the
      application (ltxfs goes on).
  grace
      The application ignores SIGTERM: after exec-grace-period (1s) it is
      killed, ltxfs exits 137 (128 + SIGKILL) and the mount is gone.
"""

import json
import os
import signal
import sqlite3
import sys
import time

import ltxfs_harness as h
from ltxfs_harness import TestFailure, check, wait_for
from cluster_harness import Cluster

DB = "app.db"

# The application: a Python program. argv: STATE_DIR [EXIT_CODE]
# [IGNORE_TERM]. At start it writes STATE_DIR/start.json (its environment,
# process group, descriptors, and the rows it sees at its first query),
# then waits. SIGTERM: reads the database again (the mount must still
# serve), writes STATE_DIR/term.json and exits EXIT_CODE. SIGHUP: appends
# to STATE_DIR/hup.
APP = r'''
import json, os, signal, sqlite3, sys, time

def ltxfs_pid():
    """The nearest ancestor that is ltxfs (the shell may be between)."""
    pid = os.getppid()
    for _ in range(8):
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        if st[st.index("(") + 1:st.rindex(")")] == "ltxfs":
            return pid
        pid = int(st[st.rindex(")") + 2:].split()[1])
    return os.getppid()

supervisor = ltxfs_pid()   # the loop below ends with it
state = sys.argv[1]
code = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() \
    else 7
ignore_term = len(sys.argv) > 3 and sys.argv[3] == "ignore-term"
mnt = os.environ.get("LTXFS_MOUNT", "")

def count(table):
    try:
        c = sqlite3.connect("file:%s/app.db?mode=ro" % mnt, uri=True,
                            timeout=10)
    except sqlite3.Error as e:
        return str(e)
    try:
        return c.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    except sqlite3.Error as e:
        return str(e)
    finally:
        c.close()

def write(name, obj):
    tmp = os.path.join(state, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, os.path.join(state, name))

def on_term(sig, frame):
    write("term.json", {"rows": count("t"), "mounted": os.path.ismount(mnt)})
    sys.exit(code)

def on_hup(sig, frame):
    with open(os.path.join(state, "hup"), "a") as f:
        f.write("hup\n")

fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink("/proc/self/fd/" + fd)
    except OSError:
        pass
signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_term else on_term)
signal.signal(signal.SIGHUP, on_hup)
write("start.json", {
    "pid": os.getpid(), "pgid": os.getpgid(0),
    "primary": os.environ.get("LTXFS_PRIMARY"),
    "primary_url": os.environ.get("LTXFS_PRIMARY_URL"),
    "mount": mnt, "fds": fds,
    "rows": count("t"), "runs": count("runs"),
    "mask": open("/proc/self/status").read().split("SigBlk:")[1].split()[0],
})
if len(sys.argv) > 2 and sys.argv[2] == "exit-now":
    sys.exit(5)
while os.path.exists("/proc/%d" % supervisor):
    time.sleep(0.05)
'''

# The migration: records its run (argv[1], the node's name) in the
# database, on whatever node runs it.
MIGRATE = r'''
import os, sqlite3, sys
c = sqlite3.connect(os.environ["LTXFS_MOUNT"] + "/app.db", timeout=10)
c.execute("CREATE TABLE IF NOT EXISTS runs(node TEXT)")
c.execute("INSERT INTO runs VALUES(?)", (sys.argv[1],))
c.commit()
'''


def log(msg):
    sys.stdout.write("%s\n" % msg)
    sys.stdout.flush()


def app_files(node):
    """Writes the application and the migration into node's directory;
    returns (program, state directory)."""
    prog = os.path.join(node.root, "app.py")
    state = os.path.join(node.root, "state")
    os.makedirs(state, exist_ok=True)
    with open(prog, "w") as f:
        f.write(APP)
    with open(os.path.join(node.root, "migrate.py"), "w") as f:
        f.write(MIGRATE)
    return prog, state


def read_json(state, name):
    try:
        with open(os.path.join(state, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def set_exec(node, yml):
    """Appends exec settings to node's configuration."""
    with open(node.cfg, "a") as f:
        f.write(yml)


def stop_with_code(node, timeout=60):
    """SIGTERM; returns ltxfs's exit code once it has exited and the mount
    is gone."""
    node.proc.send_signal(signal.SIGTERM)
    rc = node.wait_exit(timeout)
    check(not h.is_mounted(node.mnt), "%s: still mounted after exit"
          % node.name)
    return rc


def check_child_fds(node, start):
    for fd, target in start["fds"].items():
        bad = ("/dev/fuse" in target or node.data in target or
               target.startswith(node.mnt) or "lock" in target)
        check(not bad, "%s: the application inherited fd %s -> %s"
              % (node.name, fd, target))
    check(set(start["fds"]) <= {"0", "1", "2", "3"},
          "%s: the application has descriptors %s" % (node.name,
                                                       start["fds"]))


def migrate():
    with Cluster(2) as cl:
        p, r = cl.primary, cl.replicas[0]
        files = {}
        for n in cl.nodes:
            prog, state = app_files(n)
            files[n.name] = state
            set_exec(n, "exec:\n  - cmd: python3 %s/migrate.py %s\n"
                     "    if-candidate: true\n"
                     "  - python3 %s %s 7\nexec-grace-period: 20s\n"
                     % (n.root, n.name, prog, state))
        # The primary, with rows the replica will have to catch up.
        p.start()
        wait_for(lambda: read_json(files["n0"], "start.json"), 60,
                 "the primary's application to start")
        ps = read_json(files["n0"], "start.json")
        check(ps["runs"] == 1, "the primary's application saw %r "
              "migration runs at its start, not 1" % ps["runs"])
        c = h.connect(p.path(DB))
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        for i in range(40):
            c.execute("BEGIN")
            for j in range(50):
                c.execute("INSERT INTO t(v) VALUES(?)", (os.urandom(2048),))
            c.execute("COMMIT")
        want = h.one(c, "SELECT count(*) FROM t")
        c.close()
        r.start()
        wait_for(lambda: read_json(files["n1"], "start.json"), 60,
                 "the replica's application to start")
        rs = read_json(files["n1"], "start.json")
        log("migrate: primary app %s; replica app saw %s rows of %d, %s "
            "migration runs" % ({k: ps[k] for k in ("primary", "pgid",
                                                    "pid")},
                                rs["rows"], want, rs["runs"]))
        check(rs["rows"] == want, "the replica's application started "
              "before it had caught up: its first query saw %r rows, the "
              "primary has %d" % (rs["rows"], want))
        check(rs["runs"] == 1, "the replica saw %r migration runs, not 1 "
              "(the primary's)" % rs["runs"])
        check("skipping" in r.log_text() and "if-candidate" in r.log_text(),
              "the replica did not say it skipped the migration")
        cr = h.ro_connect(r.path(DB))
        runs = cr.execute("SELECT node FROM runs").fetchall()
        cr.close()
        check(runs == [("n0",)], "migration runs: %s" % runs)
        for n, s in ((p, ps), (r, rs)):
            # Its own group: the shell's (ltxfs's is its own PID's).
            check(s["pgid"] != os.getpgid(n.proc.pid) and
                  s["pgid"] != n.proc.pid, "%s: the application is in "
                  "ltxfs's process group" % n.name)
            check(s["mount"] == n.mnt, "%s: LTXFS_MOUNT=%r" % (n.name,
                                                              s["mount"]))
            check(s["primary_url"] == p.url, "%s: LTXFS_PRIMARY_URL=%r, "
                  "not %s" % (n.name, s["primary_url"], p.url))
            check(int(s["mask"], 16) == 0, "%s: the application starts "
                  "with signals blocked (%s)" % (n.name, s["mask"]))
            check_child_fds(n, s)
        check(ps["primary"] == "1" and rs["primary"] == "",
              "LTXFS_PRIMARY: primary %r, replica %r" % (ps["primary"],
                                                         rs["primary"]))
        # SIGTERM: the application first, then the mount goes.
        for n in (r, p):
            rc = stop_with_code(n)
            term = read_json(files[n.name], "term.json")
            check(term is not None, "%s: the application got no SIGTERM"
                  % n.name)
            check(term["rows"] == want and term["mounted"],
                  "%s: at SIGTERM the application read %r (mounted %s)"
                  % (n.name, term["rows"], term["mounted"]))
            check(rc == 7, "%s: ltxfs exited %d, not the application's 7"
                  % (n.name, rc))
        log("migrate: SIGTERM reached both applications, ltxfs exited 7, "
            "the mounts are gone")


def fail():
    with Cluster(1) as cl:
        p = cl.primary
        prog, state = app_files(p)
        set_exec(p, "exec:\n  - echo first\n  - sh -c 'exit 3'\n"
                 "  - python3 %s %s\n" % (prog, state))
        # (Not ClusterNode.start: it would wait for /healthz.)
        st = h.Node.start(p, expect_mount=False)
        rc = p.wait_exit(60)
        text = p.log_text()
        log("fail: start said %s, exit %d" % (st, rc))
        check(rc == 3, "ltxfs exited %d, not 3" % rc)
        check("command 2 of 3, \"sh -c 'exit 3'\", exited with status 3"
              in text, "no message naming the failed command: %s"
              % text[-1500:])
        check(read_json(state, "start.json") is None,
              "the application started")
        check(not h.is_mounted(p.mnt), "still mounted")


def exit_code():
    with Cluster(1) as cl:
        p = cl.primary
        prog, state = app_files(p)
        set_exec(p, "exec: python3 %s %s exit-now\n" % (prog, state))
        p.start()
        rc = p.wait_exit(60)
        check(rc == 5, "ltxfs exited %d, not the application's 5" % rc)
        check(read_json(state, "start.json") is not None,
              "the application did not run")
        check(not h.is_mounted(p.mnt), "still mounted")
        log("exit-code: the application exited 5, so did ltxfs")
        # The command line overrides exec; SIGHUP is passed on.
        os.remove(os.path.join(state, "start.json"))
        p.mount_args = ["--", "python3", prog, state, "9"]
        p.start()
        s = wait_for(lambda: read_json(state, "start.json"), 60,
                     "the application to start")
        p.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(os.path.join(state, "hup")), 10,
                 "SIGHUP to reach the application")
        check(p.running() and h.is_mounted(p.mnt),
              "ltxfs stopped on SIGHUP")
        os.kill(s["pid"], signal.SIGKILL)
        rc = p.wait_exit(60)
        check(rc == 137, "ltxfs exited %d, not 137 (128 + SIGKILL)" % rc)
        log("exit-code: `mount -- CMD` ran it; SIGHUP passed on; killed, "
            "ltxfs exited 137")


def grace():
    with Cluster(1) as cl:
        p = cl.primary
        prog, state = app_files(p)
        set_exec(p, "exec: python3 %s %s 7 ignore-term\n"
                 "exec-grace-period: 1s\n" % (prog, state))
        p.start()
        wait_for(lambda: read_json(state, "start.json"), 60,
                 "the application to start")
        t0 = time.monotonic()
        rc = stop_with_code(p)
        took = time.monotonic() - t0
        log("grace: ltxfs exited %d %.2f s after SIGTERM" % (rc, took))
        check(rc == 137, "ltxfs exited %d, not 137" % rc)
        check(took >= 0.9, "stopped after %.2f s, before the grace" % took)
        check("did not exit within exec-grace-period" in p.log_text(),
              "no log line about the kill")


CASES = {
    "migrate": migrate,
    "fail": fail,
    "exit-code": exit_code,
    "grace": grace,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.stderr.write("usage: test_exec.py CASE\ncases: %s\n"
                         % " ".join(sorted(CASES)))
        sys.exit(2)
    log("exec/%s" % sys.argv[1])
    h.main(CASES[sys.argv[1]])
