#!/usr/bin/env python3
"""deploy/kubernetes, checked without an API server (none runs here).

  test_kubernetes.py render   each overlay rendered by `kubectl kustomize`
                              (the kubectl on PATH: CI's is Debian 12's
                              1.20 with kustomize v2.0.3), every object
                              validated against the Kubernetes 1.27
                              schemas (npm kubernetes-models, k8s/), the
                              validator shown to fail on broken objects,
                              and the objects' references checked
  test_kubernetes.py pods     the static overlay's StatefulSet pod
                              template run for real under podman as pods
                              ltxfs-0..2 (see run_pods)

Rules:
 1. Real tools only: kubectl, node and npm, podman. A missing one makes
    the test skip (77) with its name, except under CI=true, where it fails.
 2. The manifests are rendered from a copy of deploy/kubernetes with a
    cluster token of this run (base/cluster-token.env is never shipped).
 3. The pod run converts, and refuses what it does not know: every env
    source, volume and security setting of the template is either turned
    into its podman equivalent or the test fails naming it, so the
    manifest cannot grow something this test silently leaves out. Ports
    are not published (the test reaches each pod at its network address,
    as the kubelet's probes do) and resource requests are not enforced.
 4. Every wait is bounded; every container, volume and network is named
    with this run's id and removed by that name at the end, even on
    failure.
"""
import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
K8S = os.path.join(SRC, 'deploy', 'kubernetes')
OVERLAYS = ['static', 'etcd']
SKIP = 77


def log(msg):
    print(msg, flush=True)


def fail(msg):
    log('FAIL: ' + msg)
    sys.exit(1)


def need(tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    why = 'missing ' + ', '.join(missing) + ' (scripts/install-deps)'
    if os.environ.get('CI') == 'true':
        fail(why + ', required in CI')
    log('SKIP: ' + why)
    sys.exit(SKIP)


def run(cmd, check=True, timeout=120, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        fail('%s exited %d: %s' % (' '.join(cmd), p.returncode,
                                   (p.stderr or p.stdout).strip()[-2000:]))
    return p


# -- rendering and validation ------------------------------------------

def copy_tree(tmp, token):
    """deploy/kubernetes copied under tmp, with this run's cluster token."""
    dst = os.path.join(tmp, 'kubernetes')
    shutil.copytree(K8S, dst, ignore=shutil.ignore_patterns(
        'cluster-token.env'))
    if token is not None:
        with open(os.path.join(dst, 'base', 'cluster-token.env'), 'w') as f:
            f.write('token=%s\n' % token)
    return dst


def render(tree, overlay):
    p = run(['kubectl', 'kustomize', os.path.join(tree, overlay)])
    return p.stdout


def npm_dir():
    """kubernetes-models and yaml installed (npm ci) into the build dir."""
    d = os.environ.get('LTXFS_K8S_NPM_DIR') or os.path.join(
        tempfile.gettempdir(), 'ltxfs-k8s-npm')
    os.makedirs(d, exist_ok=True)
    lock = os.path.join(HERE, 'k8s', 'package-lock.json')
    have = os.path.join(d, 'package-lock.json')
    ready = os.path.join(d, 'node_modules', 'kubernetes-models')
    same = os.path.exists(have) and \
        open(have, 'rb').read() == open(lock, 'rb').read()
    if not (same and os.path.isdir(ready)):
        for f in ('package.json', 'package-lock.json'):
            shutil.copy(os.path.join(HERE, 'k8s', f), d)
        log('npm ci in %s' % d)
        run(['npm', 'ci', '--no-audit', '--no-fund', '--ignore-scripts'],
            cwd=d, timeout=300)
    return os.path.join(d, 'node_modules')


def validate(modules, path):
    env = dict(os.environ, NODE_PATH=modules)
    return run(['node', os.path.join(HERE, 'k8s', 'validate.js'), path],
               check=False, env=env)


def to_objects(modules, text, tmp):
    """The YAML documents as Python objects (yaml parsed by node)."""
    path = os.path.join(tmp, 'objs.yaml')
    with open(path, 'w') as f:
        f.write(text)
    code = ("const Y=require('yaml'),fs=require('fs');"
            "console.log(JSON.stringify(Y.parseAllDocuments("
            "fs.readFileSync(process.argv[1],'utf8'))"
            ".map(d=>d.toJS()).filter(o=>o)))")
    env = dict(os.environ, NODE_PATH=modules)
    return json.loads(run(['node', '-e', code, path], env=env).stdout)


def to_yaml_docs(objs):
    """JSON is YAML: one document per object."""
    return ''.join('---\n' + json.dumps(o) + '\n' for o in objs)


def find(objs, kind, name=None, prefix=None):
    got = [o for o in objs if o['kind'] == kind and
           (name is None or o['metadata']['name'] == name) and
           (prefix is None or o['metadata']['name'].startswith(prefix))]
    if len(got) != 1:
        fail('expected one %s %s, found %d' % (kind, name or prefix or '',
                                                len(got)))
    return got[0]


def check_validator_fails(modules, objs, tmp):
    """The validator rejects a string where an int is required and a
    container without its required name, naming the field."""
    cases = [
        ('replicas "3"', lambda s: s['spec'].__setitem__('replicas', '3'),
         'replicas must be integer'),
        ('container without name',
         lambda s: s['spec']['template']['spec']['containers'][0].pop(
             'name'), 'must have required property name'),
        ('probe port as a list',
         lambda s: s['spec']['template']['spec']['containers'][0][
             'readinessProbe']['httpGet'].__setitem__('port', [20202]),
         'readinessProbe/httpGet/port'),
    ]
    for what, breakit, expect in cases:
        bad = json.loads(json.dumps(objs))
        breakit(find(bad, 'StatefulSet', 'ltxfs'))
        path = os.path.join(tmp, 'bad.yaml')
        with open(path, 'w') as f:
            f.write(to_yaml_docs(bad))
        p = validate(modules, path)
        if p.returncode == 0 or 'FAIL StatefulSet/ltxfs' not in p.stdout \
                or expect not in p.stdout:
            fail('validator accepted a broken object (%s): rc %d\n%s%s' %
                 (what, p.returncode, p.stdout, p.stderr))
        log('validator refuses %s: %s' % (what, [
            l for l in p.stdout.splitlines() if l.startswith('FAIL')][0]))


def ltxfs_container(sts):
    cs = sts['spec']['template']['spec']['containers']
    got = [c for c in cs if c['name'] == 'ltxfs']
    if len(got) != 1:
        fail('StatefulSet %s has no container ltxfs' %
             sts['metadata']['name'])
    return got[0]


def check_references(objs, overlay):
    """What kustomize must have kept consistent, and the probes and names
    docs/DEPLOY.md promises."""
    sts = find(objs, 'StatefulSet', 'ltxfs')
    spec = sts['spec']
    pod = spec['template']['spec']
    c = ltxfs_container(sts)
    labels = spec['template']['metadata']['labels']
    cm = find(objs, 'ConfigMap', prefix='ltxfs-config')
    sec = find(objs, 'Secret', prefix='ltxfs-token')
    vols = {v['name']: v for v in pod['volumes']}
    if vols['config']['configMap']['name'] != cm['metadata']['name']:
        fail('%s: config volume names %s, the ConfigMap is %s' % (
            overlay, vols['config']['configMap']['name'],
            cm['metadata']['name']))
    env = {e['name']: e for e in c['env']}
    ref = env['LTXFS_TOKEN']['valueFrom']['secretKeyRef']
    if ref['name'] != sec['metadata']['name'] or \
            ref['key'] not in sec['data']:
        fail('%s: LTXFS_TOKEN refers to %s/%s, not the Secret' % (
            overlay, ref['name'], ref['key']))
    if env['POD_NAME']['valueFrom']['fieldRef']['fieldPath'] != \
            'metadata.name':
        fail('%s: POD_NAME is not the pod name' % overlay)
    probes = (c['readinessProbe']['httpGet'], c['livenessProbe']['httpGet'])
    if [p['path'] for p in probes] != ['/readyz', '/healthz'] or \
            [p['port'] for p in probes] != [20202, 20202]:
        fail('%s: probes are %s' % (overlay, probes))
    nodes = find(objs, 'Service', spec['serviceName'])
    if nodes['spec'].get('clusterIP') != 'None' or \
            not nodes['spec'].get('publishNotReadyAddresses'):
        fail('%s: Service %s is not headless with unready addresses' % (
            overlay, spec['serviceName']))
    for kind, name, sel in (
            ('Service', 'ltxfs', 'selector'),
            ('Service', 'ltxfs-client', 'selector'),
            ('PodDisruptionBudget', 'ltxfs', 'matchLabels')):
        o = find(objs, kind, name)
        s = o['spec']['selector']
        s = s.get('matchLabels', s) if sel == 'matchLabels' else s
        if any(labels.get(k) != v for k, v in s.items()) or not s:
            fail('%s: %s %s selects %s, not the pods %s' % (
                overlay, kind, name, s, labels))
    mounts = {m['name'] for m in c['volumeMounts']}
    claims = {t['metadata']['name'] for t in spec['volumeClaimTemplates']}
    if not claims <= mounts:
        fail('%s: claims %s not all mounted' % (overlay, claims))
    yml = cm['data']['ltxfs.yml']
    if 'http://${POD_NAME}.%s:20202' % spec['serviceName'] not in yml:
        fail('%s: advertise-url does not use <pod>.<service>' % overlay)
    if overlay == 'etcd':
        etcd = find(objs, 'StatefulSet', 'etcd')
        for i in range(etcd['spec']['replicas']):
            if 'http://etcd-%d.%s:2379' % (i, etcd['spec']['serviceName']) \
                    not in yml:
                fail('etcd: ltxfs.yml does not name etcd member %d' % i)
        hook = c['lifecycle']['preStop']['exec']['command']
        script = hook[-1].rsplit('/', 1)[1]
        if script not in cm['data']:
            fail('etcd: preStop runs %s, not in the ConfigMap' % hook)
    log('%s: references, probes and names consistent' % overlay)


def test_render():
    need(['kubectl', 'node', 'npm'])
    ver = run(['kubectl', 'version', '--client']).stdout.strip()
    log('kubectl: ' + ver.splitlines()[0])
    modules = npm_dir()
    with tempfile.TemporaryDirectory(prefix='ltxfs-k8s-') as tmp:
        bare = copy_tree(os.path.join(tmp, 'bare'), None)
        p = run(['kubectl', 'kustomize', os.path.join(bare, 'static')],
                check=False)
        if p.returncode == 0 or 'cluster-token.env' not in p.stderr:
            fail('rendered without a cluster token file: rc %d %s' % (
                p.returncode, p.stderr.strip()))
        log('without base/cluster-token.env: refused, rc %d' %
            p.returncode)
        tree = copy_tree(tmp, secrets.token_hex(16))
        for overlay in OVERLAYS:
            text = render(tree, overlay)
            path = os.path.join(tmp, overlay + '.yaml')
            with open(path, 'w') as f:
                f.write(text)
            p = validate(modules, path)
            sys.stdout.write(p.stdout)
            objs = to_objects(modules, text, tmp)
            oks = [l for l in p.stdout.splitlines() if l.startswith('ok ')]
            if p.returncode != 0 or len(oks) != len(objs):
                fail('%s: %d of %d objects valid: %s' % (
                    overlay, len(oks), len(objs), p.stderr))
            log('%s: %d objects rendered and valid' % (overlay, len(objs)))
            check_references(objs, overlay)
            if overlay == 'static':
                check_validator_fails(modules, objs, tmp)
    log('1 passed, 0 failed')


# -- the pod template under podman --------------------------------------

class Pods:
    """Containers, volumes and a network of one run, removed by name."""

    def __init__(self, run_id):
        self.id = run_id
        self.net = 'ltxfs-k8s-%s' % run_id
        self.containers = []
        self.volumes = []
        self.made_net = False

    def network(self):
        run(['podman', 'network', 'create', self.net])
        self.made_net = True

    def volume(self, name):
        run(['podman', 'volume', 'create', name])
        self.volumes.append(name)
        return name

    def cleanup(self):
        for c in self.containers:
            run(['podman', 'rm', '-f', '-t', '5', c], check=False)
        for v in self.volumes:
            run(['podman', 'volume', 'rm', '-f', v], check=False)
        if self.made_net:
            run(['podman', 'network', 'rm', '-f', self.net], check=False)


def env_of(c, pod_name, namespace, secret_data):
    """The container's env as the kubelet would set it (rule 3)."""
    out = {}
    for e in c.get('env', []):
        if 'value' in e:
            out[e['name']] = e['value']
            continue
        src = e.get('valueFrom', {})
        if 'fieldRef' in src:
            path = src['fieldRef']['fieldPath']
            if path == 'metadata.name':
                out[e['name']] = pod_name
            elif path == 'metadata.namespace':
                out[e['name']] = namespace
            else:
                fail('env %s: fieldRef %s not converted' % (e['name'], path))
        elif 'secretKeyRef' in src:
            ref = src['secretKeyRef']
            name, key = ref['name'], ref['key']
            if name not in secret_data or key not in secret_data[name]:
                fail('env %s: Secret %s/%s not rendered' % (e['name'], name,
                                                            key))
            out[e['name']] = base64.b64decode(
                secret_data[name][key]).decode()
        else:
            fail('env %s: source %s not converted' % (e['name'], src))
    return out


def config_dirs(tmp, pod, objs):
    """Each configMap volume of the pod as a directory of its files."""
    cms = {o['metadata']['name']: o for o in objs if o['kind'] == 'ConfigMap'}
    dirs = {}
    for v in pod.get('volumes', []):
        if set(v) != {'name', 'configMap'}:
            fail('volume %s: only configMap volumes are converted' % v)
        cm = cms.get(v['configMap']['name'])
        if cm is None:
            fail('volume %s: ConfigMap %s not rendered' % (
                v['name'], v['configMap']['name']))
        d = os.path.join(tmp, 'cm-' + v['name'])
        os.makedirs(d, exist_ok=True)
        for fname, text in cm['data'].items():
            with open(os.path.join(d, fname), 'w') as f:
                f.write(text)
        dirs[v['name']] = d
    return dirs


def security_args(c, pod):
    sc = dict(c.get('securityContext', {}))
    args = []
    if sc.pop('privileged', False):
        args.append('--privileged')
    caps = sc.pop('capabilities', {})
    args += ['--cap-add=' + x for x in caps.pop('add', [])]
    args += ['--cap-drop=' + x for x in caps.pop('drop', [])]
    if sc or caps or pod.get('securityContext'):
        fail('securityContext %s not converted' % (sc or caps or
                                                  pod['securityContext']))
    return args


def expand_refs(text, env):
    """$(VAR) of the container's env replaced, $$(VAR) kept as $(VAR),
    as the kubelet does in command and args."""
    return re.sub(r'\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))',
                  lambda m: '$' if m.group(1) == '$' else
                  env.get(m.group(2), m.group(0)), text)


def only_container(sts):
    pod = sts['spec']['template']['spec']
    if len(pod['containers']) != 1 or pod.get('initContainers'):
        fail('%s: only a pod of one container is converted' %
             sts['metadata']['name'])
    return pod['containers'][0]


def podman_run_args(pods, sts, objs, i, image, namespace, dirs):
    """`podman run` arguments for pod <sts>-i of the StatefulSet."""
    spec = sts['spec']
    pod = spec['template']['spec']
    svc = spec['serviceName']
    c = only_container(sts)
    secret_data = {o['metadata']['name']: o['data'] for o in objs
                   if o['kind'] == 'Secret'}
    name = '%s-%d' % (sts['metadata']['name'], i)
    cname = '%s-%s' % (name, pods.id)
    args = ['podman', 'run', '-d', '--name', cname,
            '--network', pods.net, '--hostname', name,
            '--network-alias', name, '--network-alias', name + '.' + svc,
            '--stop-timeout', str(pod.get('terminationGracePeriodSeconds',
                                          30))]
    pods.containers.append(cname)
    args += security_args(c, pod)
    env = env_of(c, name, namespace, secret_data)
    for k, v in env.items():
        args += ['--env', '%s=%s' % (k, v)]
    claims = {t['metadata']['name'] for t in spec['volumeClaimTemplates']}
    for m in c.get('volumeMounts', []):
        if m['name'] in claims:
            vol = pods.volume('%s-%s-%s' % (m['name'], name, pods.id))
            args += ['-v', '%s:%s' % (vol, m['mountPath'])]
        elif m['name'] in dirs:
            args += ['-v', '%s:%s:ro' % (dirs[m['name']], m['mountPath'])]
        else:
            fail('volumeMount %s: no such volume' % m['name'])
    cmd = [expand_refs(a, env) for a in
           c.get('command', []) + c.get('args', [])]
    if cmd:
        args += ['--entrypoint', json.dumps(cmd[:1])]
    args.append(image)
    args += cmd[1:]
    return cname, args


def start_sts(pods, sts, objs, image, tmp):
    """Pods <sts>-0..replicas-1 started; their container names."""
    dirs = config_dirs(os.path.join(tmp, sts['metadata']['name']),
                       sts['spec']['template']['spec'], objs)
    names = []
    for i in range(sts['spec']['replicas']):
        cname, args = podman_run_args(pods, sts, objs, i, image,
                                      'ltxfs-test', dirs)
        run(args)
        names.append(cname)
    return names


def pod_ip(cname, net):
    """The pod's address; a container that has exited fails the test
    with its log."""
    p = run(['podman', 'inspect', cname, '--format',
             '{{.State.Status}} {{json .NetworkSettings.Networks}}'])
    status, nets = p.stdout.split(' ', 1)
    if status not in ('running', 'created', 'configured'):
        logs = run(['podman', 'logs', cname], check=False)
        fail('%s is %s:\n%s%s' % (cname, status, logs.stdout,
                                   logs.stderr[-3000:]))
    return json.loads(nets).get(net, {}).get('IPAddress')


def http_get(url, token=None, timeout=3):
    req = urllib.request.Request(url)
    if token:
        req.add_header('Authorization', 'Bearer ' + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors='replace')
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors='replace')
    except OSError as e:
        return None, str(e)


def probe_url(c, probe, ip):
    g = c[probe]['httpGet']
    return 'http://%s:%d%s' % (ip, g['port'], g['path'])


def wait_for(what, fn, limit):
    """fn() until it returns a true value, at most limit seconds."""
    end = time.monotonic() + limit
    last = None
    for _ in range(int(limit * 10) + 1):
        last = fn()
        if last and last[0]:
            return last
        if time.monotonic() > end:
            break
        time.sleep(0.1)
    fail('%s: not within %ds (last: %s)' % (what, limit, last))


def pexec(cname, *cmd, check=True):
    return run(['podman', 'exec', cname] + list(cmd), check=check,
               timeout=30)


def processes(cname):
    script = ('for p in /proc/[0-9]*; do printf "%s " "${p#/proc/}"; '
              'tr "\\0" " " < "$p/cmdline"; echo; done')
    return pexec(cname, 'sh', '-c', script).stdout


def ltxfs_image():
    """The image of this source tree (tests/deploy/setup.sh; $LTXFS_IMAGE
    names it if set)."""
    tag = os.environ.get('LTXFS_IMAGE')
    p = run(['bash', os.path.join(HERE, 'setup.sh')] + ([tag] if tag else
                                                         []), timeout=900)
    return p.stdout.strip().splitlines()[-1]


def etcd_image():
    """k8s/etcd.Dockerfile built on setup.sh's base image."""
    tag = 'localhost/ltxfs-etcd:test'
    run(['podman', 'build', '--quiet', '--format', 'docker',
         '--build-arg', 'BASE=localhost/debian:bookworm',
         '-f', os.path.join(HERE, 'k8s', 'etcd.Dockerfile'), '-t', tag,
         os.path.join(HERE, 'k8s')], timeout=600)
    return tag


def run_pods():
    """The static overlay's pod template as pods ltxfs-0..2 on a podman
    network: each ready by its readinessProbe, alive by its livenessProbe,
    ltxfs PID 1 with the application (exec) its child, the token in
    force, the migration (if-candidate) replicated, a write on ltxfs-0
    read on ltxfs-1 and ltxfs-2, ltxfs-1 read-only naming ltxfs-0, and
    a clean stop (SIGTERM) of the primary draining both replicas."""
    need(['kubectl', 'node', 'npm', 'podman'])
    modules = npm_dir()
    run_id = secrets.token_hex(4)
    pods = Pods(run_id)
    token = secrets.token_hex(16)
    try:
        with tempfile.TemporaryDirectory(prefix='ltxfs-k8s-') as tmp:
            tree = copy_tree(tmp, token)
            objs = to_objects(modules, render(tree, 'static'), tmp)
            sts = find(objs, 'StatefulSet', 'ltxfs')
            c = ltxfs_container(sts)
            image = ltxfs_image()
            log('image %s in place of %s' % (image, c['image']))
            pods.network()
            names = start_sts(pods, sts, objs, image, tmp)
            check_pods(pods, c, names, token)
    finally:
        pods.cleanup()
    log('1 passed, 0 failed')


def check_pods(pods, c, names, token):
    ips = {}
    for cname in names:
        ips[cname] = wait_for(
            cname + ' address',
            lambda: (pod_ip(cname, pods.net),), 10)[0]
    for cname in names:
        ip = ips[cname]
        st = wait_for(cname + ' readinessProbe',
                      lambda: (lambda r: (r[0] == 200, r))(
                          http_get(probe_url(c, 'readinessProbe', ip))),
                      60)
        live = http_get(probe_url(c, 'livenessProbe', ip))
        if live[0] != 200:
            fail('%s livenessProbe: %s' % (cname, live))
        log('%s (%s): readyz %s, healthz %s' % (cname, ip, st[1][1].strip(),
                                               live[1].strip()))
        info = 'http://%s:20202/info' % ip
        if http_get(info)[0] != 401 or http_get(info, token)[0] != 200:
            fail('%s: the Secret\'s token is not in force on /info' % cname)
        ps = processes(cname)
        pid1 = [l for l in ps.splitlines() if l.startswith('1 ')]
        if not pid1 or 'ltxfs mount -c /etc/ltxfs/ltxfs.yml' not in pid1[0]:
            fail('%s: PID 1 is not ltxfs: %s' % (cname, ps))
        if 'sleep infinity' not in ps:
            fail('%s: the exec application is not running:\n%s' % (
                cname, ps))
    log('every pod: ready, alive, token in force, exec application runs')
    primary, replicas = names[0], names[1:]
    for r in replicas:
        tables = pexec(r, 'sqlite3', '/litefs/app.db', '.tables').stdout
        if 'kv' not in tables.split():
            fail('%s: the if-candidate migration did not replicate: %r' %
                 (r, tables))
    value = 'v-' + secrets.token_hex(4)
    pexec(primary, 'sqlite3', '/litefs/app.db',
          "INSERT INTO kv VALUES('k', '%s')" % value)
    for r in replicas:
        wait_for(r + ' reads the write of ' + primary,
                 lambda: (lambda out: (out == value, out))(pexec(
                     r, 'sqlite3', '/litefs/app.db',
                     "SELECT v FROM kv WHERE k='k'",
                     check=False).stdout.strip()), 10)
    log('a write on %s read on %s' % (primary, ', '.join(replicas)))
    w = pexec(replicas[0], 'sqlite3', '/litefs/app.db',
              "INSERT INTO kv VALUES('x', 'y')", check=False)
    if w.returncode == 0 or 'readonly' not in w.stderr:
        fail('%s took a write: %s' % (replicas[0], w.stderr))
    prim = pexec(replicas[0], 'cat', '/litefs/.primary').stdout
    if 'ltxfs-0' not in prim:
        fail('%s: .primary is %r, not ltxfs-0' % (replicas[0], prim))
    log('%s is read-only; .primary: %s' % (replicas[0], prim.strip()))
    run(['podman', 'stop', primary], timeout=60)
    out = run(['podman', 'logs', primary]).stdout + \
        run(['podman', 'logs', primary]).stderr
    drained = [l for l in out.splitlines() if 'every replica' in l]
    if not drained or '(%d)' % len(replicas) not in drained[-1]:
        fail('%s: no drain of its %d replicas on SIGTERM:\n%s' % (
            primary, len(replicas), out[-3000:]))
    code = run(['podman', 'inspect', primary, '--format',
                '{{.State.ExitCode}}']).stdout.strip()
    log('%s stopped (SIGTERM, exit %s): %s' % (primary, code,
                                               drained[-1].strip()))


def info(ip, token):
    st, body = http_get('http://%s:20202/info' % ip, token)
    return json.loads(body) if st == 200 else {}


def primaries(ips, token):
    return [c for c, ip in ips.items()
            if info(ip, token).get('role') == 'primary']


def wait_ready(names, net, probe_of, limit):
    ips = {}
    for cname in names:
        ips[cname] = wait_for(cname + ' address',
                              lambda: (pod_ip(cname, net),), 10)[0]
    for cname in names:
        url = probe_of(ips[cname])
        wait_for(cname + ' readinessProbe ' + url,
                 lambda: (lambda r: (r[0] == 200, r))(http_get(url)), limit)
    return ips


def sql(cname, q, check=True):
    return pexec(cname, 'sqlite3', '/litefs/app.db', q, check=check)


def wait_row(cname, k, v):
    wait_for('%s reads %s=%s' % (cname, k, v),
             lambda: (lambda out: (out == v, out))(sql(
                 cname, "SELECT v FROM kv WHERE k='%s'" % k,
                 check=False).stdout.strip()), 15)


def run_etcd_pods():
    """The etcd overlay's two StatefulSets as pods etcd-0..2 (Debian's
    etcd in k8s/etcd.Dockerfile in place of the overlay's image) and
    ltxfs-0..2: one ltxfs pod takes the lease, every pod is ready with
    its application running, a write on the primary is read on both
    replicas; the manifest's preStop hook, run in the primary, hands the
    lease to another pod, and after the old primary's SIGTERM stop the
    new primary has every row and its writes reach the last replica."""
    need(['kubectl', 'node', 'npm', 'podman'])
    modules = npm_dir()
    pods = Pods(secrets.token_hex(4))
    token = secrets.token_hex(16)
    try:
        with tempfile.TemporaryDirectory(prefix='ltxfs-k8s-') as tmp:
            tree = copy_tree(tmp, token)
            objs = to_objects(modules, render(tree, 'etcd'), tmp)
            sts = find(objs, 'StatefulSet', 'ltxfs')
            ests = find(objs, 'StatefulSet', 'etcd')
            c, ec = ltxfs_container(sts), only_container(ests)
            image = ltxfs_image()
            eimage = etcd_image()
            log('images %s, %s in place of %s, %s' % (
                image, eimage, c['image'], ec['image']))
            pods.network()
            enames = start_sts(pods, ests, objs, eimage, tmp)
            wait_ready(enames, pods.net,
                       lambda ip: probe_url(ec, 'readinessProbe', ip), 60)
            log('etcd pods ready: ' + ', '.join(enames))
            names = start_sts(pods, sts, objs, image, tmp)
            ips = wait_ready(names, pods.net,
                             lambda ip: probe_url(c, 'readinessProbe', ip),
                             90)
            check_etcd_pods(pods, c, names, ips, token)
    finally:
        pods.cleanup()
    log('1 passed, 0 failed')


def check_etcd_pods(pods, c, names, ips, token):
    prim = wait_for('one primary', lambda: (lambda p: (len(p) == 1, p))(
        primaries(ips, token)), 30)[1][0]
    for cname in names:
        if 'sleep infinity' not in processes(cname):
            fail('%s: the exec application is not running' % cname)
    reps = [n for n in names if n != prim]
    log('primary %s; every pod ready, exec application runs' % prim)
    sql(prim, "INSERT INTO kv VALUES('a', 'before-handoff')")
    for r in reps:
        wait_row(r, 'a', 'before-handoff')
    hook = c['lifecycle']['preStop']['exec']['command']
    pexec(prim, *hook)
    new = wait_for('another primary after the preStop hook',
                   lambda: (lambda p: (len(p) == 1 and p[0] != prim, p))(
                       primaries(ips, token)), 15)[1][0]
    logs = run(['podman', 'logs', prim])
    said = [l for l in (logs.stdout + logs.stderr).splitlines()
            if '(HTTP ' in l]
    if not said or '(HTTP 200)' not in said[-1]:
        fail('%s: the preStop hook did not say 200: %s' % (prim, said))
    log('preStop hook on %s: %s; primary now %s' % (prim, said[-1].strip(),
                                                     new))
    run(['podman', 'stop', prim], timeout=60)
    wait_row(new, 'a', 'before-handoff')
    sql(new, "INSERT INTO kv VALUES('b', 'after-handoff')")
    last = [n for n in reps if n != new][0]
    wait_row(last, 'b', 'after-handoff')
    wait_row(last, 'a', 'before-handoff')
    log('after %s stopped: %s has every row, its write read on %s' % (
        prim, new, last))


def main():
    modes = {'render': test_render, 'pods': run_pods,
             'etcd-pods': run_etcd_pods}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.stderr.write('usage: test_kubernetes.py %s\n' %
                         '|'.join(modes))
        return 2
    modes[sys.argv[1]]()
    return 0


if __name__ == '__main__':
    sys.exit(main())
