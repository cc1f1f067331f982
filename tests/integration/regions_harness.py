"""Emulated regions (suite regions): every node in its own network
namespace, the namespaces joined by one bridge, and a fixed one-way delay
on the packets between regions (tests/tools/nfdelay; this kernel has no
netem, ../shared/TESTBED.md).

    with Regions({"a": 2, "b": 2, "c": 2},
                 {("a", "b"): 30, ("a", "c"): 70, ("b", "c"): 50}) as net:
        a0 = net.node("a0")                 # a NetNode: ns, ip, region
        p = net.spawn(a0, ["python3", "app.py"])   # runs in a0's namespace
        net.bytes_in_from(a0, "c")          # bytes a0 received from c

    with RegionCluster(net) as cl:          # ltxfs on every node; the
        cl.start()                          # first node of the first
        ...                                 # region is the primary

Layout (each name starts with a prefix unique to this harness object,
"lxr<pid><letter>", so runs side by side never meet):

    root namespace  <prefix>h  10.N.0.1/16  --veth--+
    <prefix>-hub    br0 (a bridge, no address)      +-- up0
    <prefix>-a0     eth0 10.N.1.1/16  --veth-- p-a0 (in br0)
    <prefix>-a1     eth0 10.N.1.2/16  --veth-- p-a1 (in br0)
    <prefix>-b0     eth0 10.N.2.1/16  ...

Rules:
 1. Addresses: one /16, 10.N.0.0/16, with N the first of 10.200..10.250
    that no route or address of the root namespace overlaps (podman uses
    10.88/16 and 10.89.x/24; chosen under a lock file, so two harnesses
    never take the same N). Region k (1-based, in the order given) is
    10.N.k.0/24, its node i 10.N.k.(i+1). Every node is on the bridge's
    one link, so nothing routes or forwards: the host's routing and
    firewall see only its own interface <prefix>h with 10.N.0.1/16, which
    the test process uses to reach every node (its packets, from 10.N.0.0/24,
    are never delayed).
 2. Delay: in each node's namespace, one iptables INPUT rule per region,
    matching the region's /24 as source and commented "from-<region>":
    packets from another region go to NFQUEUE queue k (the source
    region's index) with --queue-bypass, and one nfdelay process per
    namespace holds queue k for the one-way delay between the two
    regions; packets from the node's own region are only counted.
    Delaying only inbound packets keeps TCP's sender undisturbed
    (delaying outbound collapsed its throughput); a round trip between
    regions x and y is delay(x, y) * 2.
 3. Byte counters: those rules' counters are the bytes (IP headers
    included) each node received from each region: bytes_in_from().
 4. Processes in a namespace run under `nsenter --net=/run/netns/NS`
    (exec'd, so the PID is the program's): they share the host's mount
    namespace, so a FUSE mount made by ltxfs in one is seen by every
    other process. (`ip netns exec` would make a new mount namespace per
    call, hiding such mounts.) spawn() tracks each process; close() stops
    them by PID (SIGTERM, then SIGKILL).
 5. close() (and leaving the with-block, even by an exception) stops
    every process spawned here, then deletes exactly the namespaces and
    the root interface this object created. A harness killed with
    SIGKILL leaves them; the next Regions() deletes the leftovers of dead
    processes (names "lxr<pid>..." whose pid no longer runs), killing
    the processes still in those namespaces (its nfdelays, daemons).
"""

import contextlib
import ctypes
import fcntl
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import cluster_harness as ch
import ltxfs_harness as h
from ltxfs_harness import TestFailure, check

NODE_PORT = 20202          # every node's http.addr port (its own netns)
CMD_TIMEOUT = 30
LOCK_PATH = "/run/lock/ltxfs-regions.lock"
_PREFIX_RE = re.compile(r"^lxr(\d+)[a-z]")
_seq = [0]


def run(argv, what=None, timeout=CMD_TIMEOUT):
    """Runs argv; fails the test on a non-zero exit. Returns stdout."""
    r = subprocess.run(argv, capture_output=True, text=True,
                       timeout=timeout)
    check(r.returncode == 0, "%s: exit %d: %s%s"
          % (what or " ".join(argv), r.returncode, r.stdout, r.stderr))
    return r.stdout


def nfdelay_bin():
    b = os.environ.get("NFDELAY_BIN")
    check(b and os.access(b, os.X_OK), "NFDELAY_BIN=%r is not an "
          "executable (meson sets it to tests/tools/nfdelay)" % b)
    return b


def drop_proxies():
    """The nodes' addresses are private: no HTTP proxy of the
    environment may carry this process's requests (or curl's) to them."""
    for k in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY",
              "HTTPS_PROXY", "ALL_PROXY"):
        os.environ.pop(k, None)


def require_tools():
    """The regions suite needs root, ip, iptables and nsenter: without
    them it fails (CI has them: scripts/install-deps)."""
    check(os.geteuid() == 0, "the regions suite needs root (network "
          "namespaces)")
    for tool, pkg in (("ip", "iproute2"), ("iptables", "iptables"),
                      ("nsenter", "util-linux")):
        check(shutil.which(tool), "%s is missing (package %s)"
              % (tool, pkg))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _netns_names():
    out = run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pids_in_netns(path):
    """PIDs of the processes whose network namespace is the one bound at
    path."""
    ino = os.stat(path).st_ino
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat("/proc/%s/ns/net" % d).st_ino == ino:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def sweep_leftovers():
    """Deletes the namespaces and root interfaces of harnesses whose
    process is gone, after SIGKILLing the processes still in those
    namespaces (rule 5)."""
    for ns in _netns_names():
        m = _PREFIX_RE.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            for pid in _pids_in_netns("/run/netns/" + ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], timeout=CMD_TIMEOUT)
    for line in run(["ip", "-o", "link", "show"]).splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        m = _PREFIX_RE.match(name)
        if m and name.endswith("h") and not _pid_alive(int(m.group(1))):
            subprocess.run(["ip", "link", "del", name], timeout=CMD_TIMEOUT)


def _root_nets():
    """Every IPv4 prefix the root namespace routes or has addresses in,
    as (network int, prefix length)."""
    nets = []
    text = run(["ip", "-4", "route", "show", "table", "all"])
    text += run(["ip", "-4", "-o", "addr", "show"])
    for m in re.finditer(r"(\d+)\.(\d+)\.(\d+)\.(\d+)(?:/(\d+))?", text):
        a = [int(x) for x in m.groups()[:4]]
        plen = int(m.group(5)) if m.group(5) else 32
        nets.append(((a[0] << 24) | (a[1] << 16) | (a[2] << 8) | a[3],
                     plen))
    return nets


def _overlaps(net, plen, other, olen):
    n = min(plen, olen)
    mask = ((1 << 32) - 1) ^ ((1 << (32 - n)) - 1) if n else 0
    return (net & mask) == (other & mask)


class NetNode:
    """One node's namespace: name (e.g. "a0"), region, ns (its netns
    name), ip."""

    def __init__(self, name, region, ns, ip):
        self.name, self.region, self.ns, self.ip = name, region, ns, ip

    @property
    def nsenter(self):
        """The prefix that runs a command in this node's namespace."""
        return ["nsenter", "--net=/run/netns/" + self.ns, "--"]


class Regions:
    """regions: {region name: node count} (ordered); delays: {(x, y):
    one-way ms} for every pair of distinct regions (symmetric)."""

    def __init__(self, regions, delays):
        require_tools()
        drop_proxies()
        self.delays = {}
        for (x, y), ms in delays.items():
            self.delays[(x, y)] = self.delays[(y, x)] = int(ms)
        self.region_names = list(regions)
        for x in self.region_names:
            # Short: "p-<region><i>" must fit an interface name (15).
            check(re.fullmatch(r"[a-z][a-z0-9]{0,7}", x) and
                  0 < regions[x] <= 99, "region %r of %r nodes: a name "
                  "of 1 to 8 of [a-z0-9] and 1 to 99 nodes" % (x,
                                                              regions[x]))
            for y in self.region_names:
                check(x == y or (x, y) in self.delays,
                      "no delay given between %s and %s" % (x, y))
        _seq[0] += 1
        check(_seq[0] <= 26, "too many Regions in one process")
        self.prefix = "lxr%d%s" % (os.getpid(), chr(ord("a") + _seq[0] - 1))
        self.hub = self.prefix + "-hub"
        self.root_if = self.prefix + "h"
        self.namespaces = []      # created, in order
        self.root_if_made = False
        self.procs = []           # (what, Popen) spawned here
        self.delayers = {}        # node name: its nfdelay Popen
        self.nodes = {}
        self.counts = dict(regions)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- building ------------------------------------------------------

    def _ns_add(self, ns):
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _build(self):
        sweep_leftovers()
        self._ns_add(self.hub)
        run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
        with open(LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.net16 = self._pick_net()
            run(["ip", "link", "add", self.root_if, "type", "veth", "peer",
                 "name", "up0", "netns", self.hub])
            self.root_if_made = True
            run(["ip", "addr", "add", "%s.0.1/16" % self.net16, "dev",
                 self.root_if])
        run(["ip", "-n", self.hub, "link", "set", "up0", "master", "br0",
             "up"])
        run(["ip", "link", "set", self.root_if, "up"])
        for k, region in enumerate(self.region_names, 1):
            for i in range(self.counts[region]):
                self._add_node("%s%d" % (region, i), region,
                               "%s.%d.%d" % (self.net16, k, i + 1))
        for n in self.nodes.values():
            self._delay_rules(n)
        for n in self.nodes.values():
            self._start_delayer(n)

    def _pick_net(self):
        taken = _root_nets()
        for second in range(200, 251):
            net = (10 << 24) | (second << 16)
            if not any(_overlaps(net, 16, o, ol) for o, ol in taken):
                return "10.%d" % second
        raise TestFailure("no free 10.N.0.0/16 (N in 200..250) in the "
                          "root namespace's routes")

    def _add_node(self, name, region, ip):
        ns = "%s-%s" % (self.prefix, name)
        self._ns_add(ns)
        run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth",
             "peer", "name", "p-" + name, "netns", self.hub])
        run(["ip", "-n", self.hub, "link", "set", "p-" + name, "master",
             "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", ip + "/16", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self.nodes[name] = NetNode(name, region, ns, ip)

    def subnet(self, region):
        return "%s.%d.0/24" % (self.net16,
                               self.region_names.index(region) + 1)

    def _delay_rules(self, n):
        for k, src in enumerate(self.region_names, 1):
            rule = ["-A", "INPUT", "-s", self.subnet(src), "-m", "comment",
                    "--comment", "from-" + src]
            if src != n.region:
                rule += ["-j", "NFQUEUE", "--queue-num", str(k),
                         "--queue-bypass"]
            run(n.nsenter + ["iptables", "-w"] + rule)

    def _start_delayer(self, n):
        specs = ["%d:%d" % (k, self.delays[(src, n.region)])
                 for k, src in enumerate(self.region_names, 1)
                 if src != n.region]
        if not specs:
            return
        p = self.spawn(n, [nfdelay_bin()] + specs, stdout=subprocess.PIPE,
                       what="nfdelay")
        self.delayers[n.name] = p
        line = _readline(p, 10)
        check(line == "ready\n", "%s: nfdelay did not start (%r, exit %s)"
              % (n.name, line, p.poll()))

    # -- use -----------------------------------------------------------

    def node(self, name):
        return self.nodes[name]

    def region_nodes(self, region):
        return [n for n in self.nodes.values() if n.region == region]

    def one_way_ms(self, x, y):
        return 0 if x == y else self.delays[(x, y)]

    def spawn(self, n, argv, what=None, **popen_kw):
        """Starts argv in n's namespace (its own session, stdin closed);
        returns the Popen, stopped by close() or stop()."""
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(n.nsenter + list(argv), start_new_session=True,
                             **popen_kw)
        self.procs.append((what or argv[0], p))
        return p

    def stop(self, p, timeout=10):
        """SIGTERM to p (by PID), SIGKILL after timeout; returns its exit
        code."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=timeout)
        if p.stdout is not None:
            p.stdout.close()
        return p.returncode

    def start_app(self, n, db, port=8080):
        """Starts regions_app.py (a small HTTP application on the
        database at path db) in n's namespace on n.ip:port; returns its
        URL once it listens. close() stops it."""
        app = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "regions_app.py")
        p = self.spawn(n, [sys.executable, app, n.ip, str(port), db],
                       stdout=subprocess.PIPE, what="app on " + n.name)
        line = _readline(p, 30)
        check(line == "listening\n", "%s: the app did not start (%r, exit "
              "%s)" % (n.name, line, p.poll()))
        return "http://%s:%d" % (n.ip, port)

    def kill_delayer(self, n):
        """SIGKILLs n's nfdelay (a dead delayer: its queues are unbound
        and --queue-bypass lets packets into n undelayed)."""
        p = self.delayers.pop(n.name)
        p.kill()
        p.wait(timeout=CMD_TIMEOUT)

    def exec(self, n, argv, timeout=CMD_TIMEOUT, what=None):
        """Runs argv in n's namespace to its end; returns its stdout."""
        return run(n.nsenter + list(argv), what=what, timeout=timeout)

    def bytes_in_from(self, n, region):
        """Bytes (IP packets, headers included) node n received from the
        nodes of region so far (rule 3)."""
        out = self.exec(n, ["iptables", "-w", "-L", "INPUT", "-v", "-x",
                            "-n"])
        for line in out.splitlines():
            if "/* from-%s */" % region in line:
                return int(line.split()[1])
        raise TestFailure("%s: no counter for region %s in\n%s"
                          % (n.name, region, out))

    def tcp_connect_ms(self, src, dst, port, count=5):
        """The times (ms) of count TCP connects from src's namespace to
        dst's ip:port (each a SYN and its SYN-ACK: one round trip)."""
        code = ("import socket,sys,time\n"
                "for _ in range(%d):\n"
                "    t=time.monotonic()\n"
                "    s=socket.create_connection((%r,%d),timeout=10)\n"
                "    print((time.monotonic()-t)*1000)\n"
                "    s.close()\n" % (count, dst.ip, port))
        out = self.exec(src, [sys.executable, "-c", code],
                        what="connects %s -> %s" % (src.name, dst.name))
        return [float(x) for x in out.split()]

    # -- cleanup -------------------------------------------------------

    def close(self):
        errors = []
        for what, p in reversed(self.procs):
            try:
                rc = self.stop(p)
                if p in self.delayers.values() and rc != 0:
                    errors.append("nfdelay exited %s" % rc)
            except Exception as e:     # keep cleaning up
                errors.append("%s: %s" % (what, e))
        self.procs = []
        for ns in reversed(self.namespaces):
            r = subprocess.run(["ip", "netns", "del", ns],
                               capture_output=True, text=True,
                               timeout=CMD_TIMEOUT)
            if r.returncode != 0:
                errors.append("ip netns del %s: %s" % (ns, r.stderr))
        self.namespaces = []
        if self.root_if_made:
            # Gone with its peer's namespace; deleted here if not.
            r = subprocess.run(["ip", "link", "show", self.root_if],
                               capture_output=True, timeout=CMD_TIMEOUT)
            if r.returncode == 0:
                subprocess.run(["ip", "link", "del", self.root_if],
                               timeout=CMD_TIMEOUT)
            self.root_if_made = False
        check(not errors, "regions cleanup: " + "; ".join(errors))

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        try:
            self.close()
        except TestFailure:
            if et is None:
                raise
        return False


def start_etcd(net, n):
    """A real etcd (test_etcd.Etcd) in n's namespace on n's address,
    started; the caller closes it (after the nodes)."""
    import test_etcd as te
    etcd = te.Etcd(host=n.ip, cmd_prefix=n.nsenter)
    try:
        etcd.start()
    except BaseException:
        etcd.close()
        raise
    return etcd


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd, what):
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns(%s): %s" % (what, os.strerror(e)))


@contextlib.contextmanager
def inside(n):
    """Runs the with-block's code on this thread in n's network namespace
    (rule 4): sockets made there stay in it after the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    fd = -1
    try:
        fd = os.open("/run/netns/" + n.ns, os.O_RDONLY | os.O_CLOEXEC)
        _setns(fd, n.ns)
        try:
            yield
        finally:
            _setns(own, "back")
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(own)


class NsHTTPConnection(http.client.HTTPConnection):
    """An http.client connection whose socket is made (and connected) in
    netnode's namespace: a client in that node's region."""

    def __init__(self, netnode, host, port, timeout=30):
        super().__init__(host, port, timeout=timeout)
        self.netnode = netnode

    def connect(self):
        with inside(self.netnode):
            self.sock = socket.create_connection((self.host, self.port),
                                                 self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _readline(p, timeout):
    """One line of p's stdout within timeout ("" at EOF or deadline)."""
    import select
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([p.stdout], [], [], left)
        if not r:
            break
        c = os.read(p.stdout.fileno(), 1)
        if not c:
            break
        buf += c
    return buf.decode(errors="replace")


class RegionNode(ch.ClusterNode):
    """A ClusterNode whose daemon runs in a NetNode's namespace, its
    http.addr on the namespace's address (port NODE_PORT)."""

    def __init__(self, netnode, primary_url=None, **kw):
        self.netnode = netnode
        super().__init__(netnode.name, primary_url=primary_url,
                         host=netnode.ip, port=NODE_PORT, **kw)
        self.cmd_prefix = netnode.nsenter


class RegionEtcdNode(RegionNode):
    """A RegionNode with lease.type etcd (test_etcd's TTL and prefix),
    a candidate or not."""

    def __init__(self, netnode, etcd, candidate, **kw):
        self._etcd, self._candidate = etcd, candidate
        super().__init__(netnode, **kw)

    def lease_yml(self, name, primary_url):
        import test_etcd as te
        return ("lease:\n  type: etcd\n  candidate: %s\n"
                "  advertise-url: %s\n  hostname: %s\n"
                "  etcd:\n    endpoints: [%s]\n    prefix: %s\n"
                "    ttl: %ds\n" % ("true" if self._candidate else "false",
                                    self.url, name, self._etcd.url,
                                    te.PREFIX, int(te.TTL)))

    def role(self):
        """/info's role, or None when it does not answer in 2 s."""
        try:
            st, body = self.get("/info", timeout=2.0)
            return json.loads(body)["role"] if st == 200 else None
        except (OSError, ValueError, KeyError):
            return None


class RegionCluster(ch.Cluster):
    """ltxfs on every node of net. With the static lease (etcd None): the
    first node of the first region is the primary, every other node a
    replica streaming from it. With etcd (a test_etcd.Etcd, e.g. started
    by start_etcd): every node has lease.type etcd, the candidates are
    the nodes of the regions in candidates (default: the first region),
    and start() sets .primary to the one that took the lease.
    extra_yml/primary_yml/replica_yml as Cluster's."""

    def __init__(self, net, token=None, extra_yml="", primary_yml="",
                 replica_yml="", etcd=None, candidates=None):
        self.net = net
        self.tls, self.http_yml = None, ""
        self.etcd = etcd
        names = list(net.nodes)
        if etcd is not None:
            cand = candidates or net.region_names[:1]
            self.nodes = [RegionEtcdNode(net.node(x), etcd,
                                         net.node(x).region in cand,
                                         token=token, extra_yml=extra_yml)
                          for x in names]
            self.primary = None
            return
        self.primary = RegionNode(net.node(names[0]), token=token,
                                  extra_yml=extra_yml + primary_yml)
        self.nodes = [self.primary]
        for name in names[1:]:
            self.nodes.append(RegionNode(net.node(name),
                                         primary_url=self.primary.url,
                                         token=token,
                                         extra_yml=extra_yml + replica_yml))

    @property
    def replicas(self):
        return [n for n in self.nodes if n is not self.primary]

    def start(self, nodes=None):
        if self.etcd is None:
            return super().start(nodes)
        for n in nodes if nodes is not None else self.nodes:
            n.start()
        self.wait_primary(30)
        for n in self.replicas:
            if n.running():
                self.wait_connected(n)

    def wait_primary(self, timeout):
        """etcd lease: waits until exactly one running node says it is
        primary; sets and returns .primary."""
        def one():
            p = [n for n in self.nodes
                 if n.running() and n.role() == "primary"]
            return p[0] if len(p) == 1 else None
        self.primary = h.wait_for(one, timeout, "exactly one primary",
                                  interval=0.05)
        return self.primary

    def node(self, name):
        for n in self.nodes:
            if n.name == name:
                return n
        raise TestFailure("no node %s" % name)

    def region(self, region):
        return [n for n in self.nodes if n.netnode.region == region]
