"""Start-up of the ltxfs container image (docs/BENCHMARKS.md, "Container
image"): the image's size, and the time from `podman run` to the first
200 of GET /readyz, against the same for a native `ltxfs mount` of a
release build on this host in the same run (the ratio is the container's
overhead).

    python3 tests/bench/bench_deploy.py [--runs N] [--big-gib G]
        LTXFS_BIN=build-rel/cmd/ltxfs (native baseline)

Cases, each N runs (default 5), medians printed:
  empty   a fresh volume (data directory) and no database
  big     the same volume each run, holding one database of G GiB
          (default 1; 0 skips), written once through a container first

/readyz is polled from this host at the container's address on its podman
network (every 20 ms, at most 120 s). Uses tests/deploy/podman_harness.py
for the image, names and clean-up.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(
    __file__)), "..", "deploy"))
import podman_harness as ph  # noqa: E402
from podman_harness import Pod, podman, check  # noqa: E402

POLL = 0.02
LIMIT = 120.0


def ready_at(url, t0, alive):
    """Seconds from t0 to the first 200 of url; alive() false: failure."""
    deadline = t0 + LIMIT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            pass
        check(alive(), "the node exited before /readyz said 200")
        time.sleep(POLL)
    raise ph.TestFailure("no /readyz 200 within %.0fs" % LIMIT)


def container_start(p, net, short, vol):
    c = p.name(short)
    t0 = time.monotonic()
    p.node(short, net, volume=vol)
    _, ip, _ = podman("inspect", "-f",
                      "{{range .NetworkSettings.Networks}}{{.IPAddress}}"
                      "{{end}}", c)
    dt = ready_at("http://%s:20202/readyz" % ip.strip(), t0,
                  lambda: p.running(c))
    check(p.stop(c) == 0, "%s: nonzero exit" % c)
    podman("rm", "-f", "-v", c)
    return dt


def native_start(data_dir, mnt):
    """ltxfs mount on this host; returns seconds to /readyz 200."""
    port = ph.h.free_port()
    cfg = os.path.join(os.path.dirname(data_dir), "ltxfs.yml")
    with open(cfg, "w") as f:
        f.write("fuse:\n  dir: %s\ndata:\n  dir: %s\nhttp:\n"
                "  addr: 127.0.0.1:%d\n" % (mnt, data_dir, port))
    t0 = time.monotonic()
    proc = subprocess.Popen([ph.h.ltxfs_bin(), "mount", "-c", cfg],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        return ready_at("http://127.0.0.1:%d/readyz" % port, t0,
                        lambda: proc.poll() is None)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        ph.h.unmount_all(mnt)   # the read-only guard stays otherwise


def fill(p, net, vol, gib):
    """One database of gib GiB in volume vol, written in a container."""
    c = p.node("fill", net, volume=vol)
    p.wait_ready(c)
    rows = gib * 1024 * 256   # 4 KiB rows
    t0 = time.monotonic()
    p.exec(c, "sqlite3", "/litefs/big.db",
           "PRAGMA journal_mode=WAL; CREATE TABLE t(x BLOB);"
           "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM r "
           "WHERE i < %d) INSERT INTO t SELECT randomblob(4000) FROM r;"
           % rows, timeout=3600)
    print("  filled big.db (%d GiB) in %.0fs" % (gib,
                                                  time.monotonic() - t0))
    check(p.stop(c) == 0, "fill: nonzero exit")
    podman("rm", "-f", "-v", c)


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--big-gib", type=int, default=1)
    a = ap.parse_args()
    with Pod() as p:
        img = p.image()
        _, out, _ = podman("image", "inspect", "-f", "{{.Size}}", img)
        print("image %s: %.0f MB" % (img, int(out) / 1e6))
        net = p.network()
        cont, nat = [], []
        for i in range(a.runs):
            cont.append(container_start(p, net, "e%d" % i,
                                        p.volume("e%d" % i)))
            with tempfile.TemporaryDirectory(prefix="ltxfs-bench-") as d:
                os.mkdir(os.path.join(d, "mnt"))
                nat.append(native_start(os.path.join(d, "data"),
                                        os.path.join(d, "mnt")))
        print("empty: container %s s, native %s s" % (
            " ".join("%.2f" % x for x in cont),
            " ".join("%.3f" % x for x in nat)))
        print("empty: median container %.2f s, native %.3f s, ratio %.1f"
              % (med(cont), med(nat), med(cont) / med(nat)))
        if a.big_gib:
            vol = p.volume("big")
            fill(p, net, vol, a.big_gib)
            big = [container_start(p, net, "b%d" % i, vol)
                   for i in range(a.runs)]
            print("big %d GiB: container %s s, median %.2f s"
                  % (a.big_gib, " ".join("%.2f" % x for x in big),
                     med(big)))


if __name__ == "__main__":
    main()
