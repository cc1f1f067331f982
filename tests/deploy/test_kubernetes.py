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
                              ltxfs-0..2 (run_pods)
  test_kubernetes.py etcd-pods
                              the etcd overlay's etcd and ltxfs
                              StatefulSets run so, and its preStop hook
                              (run_etcd_pods)
  test_kubernetes.py tls-pods the static-tls overlay's pod template run
                              so with a Secret ltxfs-tls made here
                              (openssl, tests/integration/pki.py):
                              HTTPS probes, replication over mutual TLS
                              (run_tls_pods)

Rules:
 1. Real tools only: kubectl, node and npm, podman. A missing one makes
    the test skip (77) with its name, except under CI=true, where it fails.
 2. The manifests are rendered from a copy of deploy/kubernetes with a
    cluster token of this run (base/cluster-token.env is never shipped).
 3. The pod runs convert, and refuse what they do not know: every env
    source, volume and security setting of a template is either turned
    into its podman equivalent or the test fails naming it, so the
    manifest cannot grow something this test silently leaves out. The
    image is the one tests/deploy/setup.sh builds from this tree, in
    place of the manifest's. Ports are not published (the test reaches
    each pod at its network address, as the kubelet's probes do),
    resource requests are not enforced, and the kubelet's own work (probe
    scheduling, restarts, hooks on deletion) is not there: the test
    performs the probes' requests and runs the preStop command itself.
 4. Pods live in a podman_harness.Pod: every container, volume and
    network is named with the run's id and removed by that name at the
    end, even on failure or a timeout; every wait is bounded.
 5. Secrets the manifests use but do not generate (static-tls's
    ltxfs-tls) are made by the test as an installation would (TLS_SECRET)
    and given to the pods like the rendered ones.
"""
import base64
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import podman_harness as ph  # noqa: E402
from podman_harness import TestFailure, wait_for  # noqa: E402
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, 'tests', 'integration'))
K8S = os.path.join(SRC, 'deploy', 'kubernetes')
OVERLAYS = ['static', 'etcd', 'static-tls']
NAMESPACE = 'ltxfs-test'
TLS_SECRET = 'ltxfs-tls'
# http.tls-* key of static-tls/ltxfs.yml: the Secret's key it must name.
TLS_KEYS = {
    'tls-cert-file': 'tls.crt', 'tls-key-file': 'tls.key',
    'tls-client-ca-file': 'ca.crt', 'tls-ca-file': 'ca.crt',
    'tls-client-cert-file': 'tls.crt', 'tls-client-key-file': 'tls.key',
}
SKIP = 77


def log(msg):
    print(msg, flush=True)


def fail(msg):
    raise TestFailure(msg)


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
    etc = config_volume(pod, c)
    if volume_sources(etc, 'configMap') != [cm['metadata']['name']]:
        fail('%s: the volume at /etc/ltxfs names ConfigMap %s, the '
             'ConfigMap is %s' % (overlay, volume_sources(etc, 'configMap'),
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
    scheme = 'HTTPS' if overlay == 'static-tls' else 'HTTP'
    if [p['path'] for p in probes] != ['/readyz', '/healthz'] or \
            [p['port'] for p in probes] != [20202, 20202] or \
            [p.get('scheme', 'HTTP') for p in probes] != [scheme] * 2:
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
    if overlay == 'static-tls':
        check_tls(objs, pod, c, etc, yml_of(cm), spec['serviceName'])
    elif 'http://${POD_NAME}.%s:20202' % spec['serviceName'] not in yml:
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


def config_volume(pod, c):
    """The volume mounted read-only at /etc/ltxfs, where the command
    reads ltxfs.yml."""
    ms = [m for m in c['volumeMounts'] if m['mountPath'] == '/etc/ltxfs']
    if len(ms) != 1 or not ms[0].get('readOnly'):
        fail('/etc/ltxfs: mounts %s, not one read-only' % ms)
    vols = [v for v in pod['volumes'] if v['name'] == ms[0]['name']]
    if len(vols) != 1:
        fail('volume %s: %d of them' % (ms[0]['name'], len(vols)))
    return vols[0]


def volume_sources(v, kind):
    """Names of the ConfigMaps or Secrets (kind configMap, secret) a
    volume shows, itself or as a projected volume's sources."""
    srcs = v['projected']['sources'] if 'projected' in v else [v]
    key = 'secretName' if kind == 'secret' and 'projected' not in v \
        else 'name'
    return [x[kind][key] for x in srcs if kind in x]


def yml_of(cm):
    """The ConfigMap's ltxfs.yml parsed (python3-yaml is not a
    dependency: node's yaml, as for the manifests)."""
    code = ("const Y=require('yaml');process.stdout.write(JSON.stringify("
            "Y.parse(require('fs').readFileSync(0,'utf8'))))")
    env = dict(os.environ, NODE_PATH=npm_dir())
    return json.loads(run(['node', '-e', code], env=env,
                          input=cm['data']['ltxfs.yml']).stdout)


def check_tls(objs, pod, c, etc, yml, svc):
    """static-tls: every http.tls-* file of ltxfs.yml is the file the
    Secret ltxfs-tls's key it must be shows in the container; the Secret
    is not rendered (each installation makes its own); the URLs are
    https:// names under the headless Service in the pod's namespace."""
    if any(o['kind'] == 'Secret' and
           o['metadata']['name'].startswith(TLS_SECRET) for o in objs):
        fail('static-tls: Secret %s is rendered, it must not be shipped' %
             TLS_SECRET)
    if volume_sources(etc, 'secret') != [TLS_SECRET]:
        fail('static-tls: /etc/ltxfs shows Secrets %s' %
             volume_sources(etc, 'secret'))
    items = [i for x in etc['projected']['sources'] if 'secret' in x
             for i in x['secret']['items']]
    files = {'/etc/ltxfs/' + i['path']: i['key'] for i in items}
    http = yml.get('http', {})
    for k, want in TLS_KEYS.items():
        got = files.get(http.get(k))
        if got != want:
            fail('static-tls: http.%s is %r: the Secret\'s %s there, not '
                 '%s' % (k, http.get(k), got, want))
    lease = yml['lease']
    host = '${POD_NAME}.%s.${POD_NAMESPACE}.svc' % svc
    if lease['advertise-url'] != 'https://%s:20202' % host or \
            not re.match(r'https://ltxfs-0\.%s\.\$\{POD_NAMESPACE\}'
                         r'\.svc:20202$' % svc, lease['primary-url']):
        fail('static-tls: URLs %s, %s' % (lease['advertise-url'],
                                         lease['primary-url']))
    env = {e['name'] for e in c['env']}
    if 'POD_NAMESPACE' not in env:
        fail('static-tls: ltxfs.yml needs POD_NAMESPACE, not set')
    log('static-tls: every http.tls-* file is the Secret %s\'s, URLs '
        'https' % TLS_SECRET)


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


# -- the pod template under podman --------------------------------------

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


def source_files(src, objs):
    """{path: bytes} of one volume source: a configMap (every key) or a
    secret (its items, key to path), as the kubelet writes them."""
    kind = {'configMap': 'ConfigMap', 'secret': 'Secret'}
    if len(src) != 1 or next(iter(src)) not in kind:
        fail('volume source %s: only configMap and secret are converted' %
             src)
    k, ref = next(iter(src.items()))
    if set(ref) - {'name', 'items'}:
        fail('volume source %s: fields not converted' % src)
    got = [o for o in objs if o['kind'] == kind[k] and
           o['metadata']['name'] == ref['name']]
    if len(got) != 1:
        fail('%s %s: not rendered or made by the test' % (kind[k],
                                                         ref['name']))
    if k == 'configMap':
        data = {n: t.encode() for n, t in got[0]['data'].items()}
    else:
        data = {n: base64.b64decode(t) for n, t in got[0]['data'].items()}
    if 'items' not in ref:
        return data
    if any(i['key'] not in data or set(i) != {'key', 'path'}
           for i in ref['items']):
        fail('volume source %s: an item is not in %s' % (src, ref['name']))
    return {i['path']: data[i['key']] for i in ref['items']}


def config_dirs(tmp, pod, objs):
    """Each configMap, secret or projected volume of the pod as a
    directory of its files (rule 3)."""
    dirs = {}
    for v in pod.get('volumes', []):
        rest = {k: x for k, x in v.items() if k != 'name'}
        if list(rest) == ['projected'] and list(
                rest['projected']) == ['sources']:
            srcs = rest['projected']['sources']
        elif list(rest) == ['configMap']:
            srcs = [rest]
        elif list(rest) == ['secret']:
            ref = dict(rest['secret'])
            srcs = [{'secret': dict(ref, name=ref.pop('secretName'))}]
        else:
            fail('volume %s: not converted' % v)
        d = os.path.join(tmp, 'vol-' + v['name'])
        for src in srcs:
            for path, data in source_files(src, objs).items():
                f = os.path.join(d, path)
                os.makedirs(os.path.dirname(f), exist_ok=True)
                with open(f, 'wb') as out:
                    out.write(data)
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


def podman_run_args(pod, net, sts, objs, i, image, dirs):
    """`podman run` arguments for pod <sts>-i of the StatefulSet: the
    container <run>-<sts>-i of pod (a podman_harness.Pod), named
    <sts>-i and <sts>-i.<service> on net, as the headless Service
    names it."""
    spec = sts['spec']
    tmpl = spec['template']['spec']
    svc = spec['serviceName']
    c = only_container(sts)
    secret_data = {o['metadata']['name']: o['data'] for o in objs
                   if o['kind'] == 'Secret'}
    name = '%s-%d' % (sts['metadata']['name'], i)
    cname = pod.name(name)
    args = ['run', '-d', '--name', cname, '--network', net,
            '--hostname', name, '--network-alias', name,
            '--network-alias', name + '.' + svc,
            '--network-alias', '%s.%s.%s.svc' % (name, svc, NAMESPACE),
            '--no-healthcheck',
            '--stop-timeout', str(tmpl.get('terminationGracePeriodSeconds',
                                           30))]
    pod.containers.append(cname)
    args += security_args(c, tmpl)
    env = env_of(c, name, NAMESPACE, secret_data)
    for k, v in env.items():
        args += ['--env', '%s=%s' % (k, v)]
    claims = {t['metadata']['name'] for t in spec['volumeClaimTemplates']}
    for m in c.get('volumeMounts', []):
        if m['name'] in claims:
            vol = pod.volume('%s-%s' % (m['name'], name))
            args += ['-v', '%s:%s' % (vol, m['mountPath'])]
        elif m['name'] in dirs:
            args += ['-v', '%s:%s:ro' % (dirs[m['name']], m['mountPath'])]
        else:
            fail('volumeMount %s: no such volume' % m['name'])
    cmd = [expand_refs(a, env) for a in
           c.get('command', []) + c.get('args', [])]
    if cmd:
        args += ['--entrypoint', json.dumps(cmd[:1])]
    return args + [image] + cmd[1:]


def start_sts(pod, net, sts, objs, image, tmp):
    """Pods <sts>-0..replicas-1 started; their container names."""
    dirs = config_dirs(os.path.join(tmp, sts['metadata']['name']),
                       sts['spec']['template']['spec'], objs)
    names = []
    for i in range(sts['spec']['replicas']):
        ph.podman(*podman_run_args(pod, net, sts, objs, i, image, dirs))
        names.append(pod.name('%s-%d' % (sts['metadata']['name'], i)))
    return names


def http_get(url, token=None, timeout=3, ctx=None):
    """(status, body) of GET url; an https URL's certificate is not
    verified unless ctx says so (the kubelet's probes do not verify)."""
    req = urllib.request.Request(url)
    if token:
        req.add_header('Authorization', 'Bearer ' + token)
    if ctx is None and url.startswith('https:'):
        ctx = ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read().decode(errors='replace')
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors='replace')
    except OSError as e:
        return None, str(e)


def probe_url(c, probe, ip):
    g = c[probe]['httpGet']
    return '%s://%s:%d%s' % (g.get('scheme', 'HTTP').lower(), ip, g['port'],
                             g['path'])


def wait_ready(pod, names, probe_of, limit):
    """Each pod's address once it has one, and its probe (the URL
    probe_of(address)) answering 200, as the kubelet's readiness probe
    would see it; a container that exits fails the test with its log."""
    def addr(c):
        if not pod.running(c):
            fail('%s exited:\n%s' % (c, pod.logs(c)))
        return pod.ip(c)

    ips = {c: wait_for(lambda: addr(c), 10, c + ' address') for c in names}
    for c in names:
        url = probe_of(ips[c])
        wait_for(lambda: addr(c) and http_get(url)[0] == 200, limit,
                 '%s readiness %s' % (c, url), interval=0.2)
    return ips


def processes(pod, c):
    script = ('for p in /proc/[0-9]*; do printf "%s " "${p#/proc/}"; '
              'tr "\\0" " " < "$p/cmdline"; echo; done')
    return pod.exec(c, 'sh', '-c', script)[1]


def select(pod, c, k):
    return pod.sql(c, "SELECT v FROM kv WHERE k='%s'" % k).strip()


def wait_row(pod, c, k, v):
    wait_for(lambda: select(pod, c, k) == v, 15,
             '%s reads %s=%s' % (c, k, v), interval=0.2)


def info(ip, token):
    st, body = http_get('http://%s:20202/info' % ip, token)
    return json.loads(body) if st == 200 else {}


def primaries(ips, token):
    return [c for c, ip in ips.items()
            if info(ip, token).get('role') == 'primary']


def etcd_image():
    """k8s/etcd.Dockerfile built on setup.sh's base image."""
    tag = 'localhost/ltxfs-etcd:test'
    ph.podman('build', '--quiet', '--format', 'docker',
              '--build-arg', 'BASE=localhost/debian:bookworm',
              '-f', os.path.join(HERE, 'k8s', 'etcd.Dockerfile'), '-t', tag,
              os.path.join(HERE, 'k8s'), timeout=600)
    return tag


def rendered(tmp, overlay, token):
    modules = npm_dir()
    tree = copy_tree(tmp, token)
    return to_objects(modules, render(tree, overlay), tmp)


def run_pods():
    """The static overlay's pod template as pods ltxfs-0..2 on a podman
    network: each ready by its readinessProbe, alive by its livenessProbe,
    ltxfs PID 1 with the application (exec) its child, the token in
    force, the migration (if-candidate) replicated, a write on ltxfs-0
    read on ltxfs-1 and ltxfs-2, ltxfs-1 read-only naming ltxfs-0, and
    a clean stop (SIGTERM) of the primary draining both replicas."""
    need(['kubectl', 'node', 'npm'])
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix='ltxfs-k8s-') as tmp, \
            ph.Pod() as pod:
        objs = rendered(tmp, 'static', token)
        sts = find(objs, 'StatefulSet', 'ltxfs')
        c = ltxfs_container(sts)
        image = pod.image()
        log('image %s in place of %s' % (image, c['image']))
        net = pod.network()
        names = start_sts(pod, net, sts, objs, image, tmp)
        ips = wait_ready(pod, names,
                         lambda ip: probe_url(c, 'readinessProbe', ip), 60)
        check_pods(pod, c, names, ips, token)


def check_pods(pod, c, names, ips, token):
    for n in names:
        live = http_get(probe_url(c, 'livenessProbe', ips[n]))
        if live[0] != 200:
            fail('%s livenessProbe: %s' % (n, live))
        url = 'http://%s:20202/info' % ips[n]
        if http_get(url)[0] != 401 or http_get(url, token)[0] != 200:
            fail('%s: the Secret\'s token is not in force on /info' % n)
        ps = processes(pod, n)
        pid1 = [l for l in ps.splitlines() if l.startswith('1 ')]
        if not pid1 or 'ltxfs mount -c /etc/ltxfs/ltxfs.yml' not in pid1[0]:
            fail('%s: PID 1 is not ltxfs: %s' % (n, ps))
        if 'sleep infinity' not in ps:
            fail('%s: the exec application is not running:\n%s' % (n, ps))
    log('every pod: ready, alive, token in force, exec application runs')
    primary, replicas = names[0], names[1:]
    for r in replicas:
        tables = pod.sql(r, '.tables')
        if 'kv' not in tables.split():
            fail('%s: the if-candidate migration did not replicate: %r' %
                 (r, tables))
    value = 'v-' + secrets.token_hex(4)
    pod.sql(primary, "INSERT INTO kv VALUES('k', '%s')" % value)
    for r in replicas:
        wait_row(pod, r, 'k', value)
    log('a write on %s read on %s' % (primary, ', '.join(replicas)))
    rc, _, err = pod.exec(replicas[0], 'sqlite3', '/litefs/app.db',
                          "INSERT INTO kv VALUES('x', 'y')", check_rc=False)
    if rc == 0 or 'readonly' not in err:
        fail('%s took a write: %s' % (replicas[0], err))
    prim = pod.exec(replicas[0], 'cat', '/litefs/.primary')[1]
    if 'ltxfs-0' not in prim:
        fail('%s: .primary is %r, not ltxfs-0' % (replicas[0], prim))
    log('%s is read-only; .primary: %s' % (replicas[0], prim.strip()))
    code = pod.stop(primary)
    drained = [l for l in pod.logs(primary, 200).splitlines()
               if 'every replica' in l]
    if not drained or '(%d)' % len(replicas) not in drained[-1]:
        fail('%s: no drain of its %d replicas on SIGTERM:\n%s' % (
            primary, len(replicas), pod.logs(primary)))
    log('%s stopped (SIGTERM, exit %d): %s' % (primary, code,
                                               drained[-1].strip()))


def tls_secret(tmp):
    """The Secret ltxfs-tls an installation makes (docs/DEPLOY.md, "TLS"):
    a CA and one certificate for every pod (pki.py, openssl), put into a
    Secret by the kubectl on PATH; with the PKI, for its files."""
    from pki import Pki
    pki = Pki()
    ext = ('subjectAltName=DNS:*.ltxfs.{0}.svc,'
           'DNS:*.ltxfs.{0}.svc.cluster.local,DNS:localhost,IP:127.0.0.1\n'
           'extendedKeyUsage=serverAuth,clientAuth\n').format(NAMESPACE)
    crt = pki.issue('ltxfs', ext=ext)
    p = run(['kubectl', 'create', 'secret', 'generic', TLS_SECRET,
             '--type=kubernetes.io/tls', '--from-file=tls.crt=' + crt,
             '--from-file=tls.key=' + pki.path('ltxfs.key'),
             '--from-file=ca.crt=' + pki.path('ca.crt'),
             '--dry-run=client', '-o', 'json'])
    sec = json.loads(p.stdout)
    path = os.path.join(tmp, 'secret.yaml')
    with open(path, 'w') as f:
        f.write(to_yaml_docs([sec]))
    v = validate(npm_dir(), path)
    if v.returncode != 0:
        fail('Secret %s: %s%s' % (TLS_SECRET, v.stdout, v.stderr))
    return sec, pki


def run_tls_pods():
    """The static-tls overlay's pod template as pods ltxfs-0..2, with the
    Secret ltxfs-tls made here: each ready by its HTTPS readinessProbe and
    alive by its livenessProbe, plain HTTP refused, /stream refused
    without a client certificate (mutual TLS on) and the node's
    certificate verified against the Secret's CA for its
    <pod>.ltxfs.<namespace>.svc name; the migration and a write on
    ltxfs-0 read on ltxfs-1 and ltxfs-2 (replication over mutual TLS)."""
    need(['kubectl', 'node', 'npm', 'openssl'])
    token = secrets.token_hex(16)
    pki = None
    with tempfile.TemporaryDirectory(prefix='ltxfs-k8s-') as tmp, \
            ph.Pod() as pod:
        try:
            objs = rendered(tmp, 'static-tls', token)
            sec, pki = tls_secret(tmp)
            sts = find(objs, 'StatefulSet', 'ltxfs')
            c = ltxfs_container(sts)
            image = pod.image()
            log('image %s in place of %s' % (image, c['image']))
            net = pod.network()
            names = start_sts(pod, net, sts, objs + [sec], image, tmp)
            ips = wait_ready(pod, names, lambda ip: probe_url(
                c, 'readinessProbe', ip), 60)
            check_tls_pods(pod, c, names, ips, token, pki)
        finally:
            if pki:
                pki.close()


def check_tls_pods(pod, c, names, ips, token, pki):
    for n in names:
        live = http_get(probe_url(c, 'livenessProbe', ips[n]))
        if live[0] != 200 or not probe_url(
                c, 'livenessProbe', ips[n]).startswith('https://'):
            fail('%s livenessProbe: %s' % (n, live))
        plain = http_get('http://%s:20202/readyz' % ips[n])
        if plain[0] is not None:
            fail('%s answered plain HTTP: %s' % (n, plain))
        st, body = http_get('https://%s:20202/stream' % ips[n], token)
        if st != 403 or 'client certificate' not in body:
            fail('%s: /stream without a client certificate: %s %s' % (
                n, st, body))
        # The chain verified against the Secret's ca.crt (the host name
        # is checked by the replicas, which reach the pods by name).
        ctx = ssl.create_default_context(cafile=pki.path('ca.crt'))
        ctx.check_hostname = False
        st, body = http_get('https://%s:20202/info' % ips[n], token,
                            ctx=ctx)
        if st != 200:
            fail('%s: /info verified with the CA: %s %s' % (n, st, body))
    log('every pod: HTTPS probes 200, plain HTTP refused, /stream needs '
        'a client certificate, certificate signed by the Secret\'s CA')
    primary, replicas = names[0], names[1:]
    for r in replicas:
        if 'kv' not in pod.sql(r, '.tables').split():
            fail('%s: the if-candidate migration did not replicate' % r)
    value = 'v-' + secrets.token_hex(4)
    pod.sql(primary, "INSERT INTO kv VALUES('k', '%s')" % value)
    for r in replicas:
        wait_row(pod, r, 'k', value)
    prim = pod.exec(replicas[0], 'cat', '/litefs/.primary')[1]
    if 'ltxfs-0' not in prim:
        fail('%s: .primary is %r, not ltxfs-0' % (replicas[0], prim))
    log('a write on %s read on %s over mutual TLS; .primary: %s' % (
        primary, ', '.join(replicas), prim.strip()))


def run_etcd_pods():
    """The etcd overlay's two StatefulSets as pods etcd-0..2 (Debian's
    etcd in k8s/etcd.Dockerfile in place of the overlay's image) and
    ltxfs-0..2: one ltxfs pod takes the lease, every pod is ready with
    its application running, a write on the primary is read on both
    replicas; the manifest's preStop hook, run in the primary, hands the
    lease to another pod, and after the old primary's SIGTERM stop the
    new primary has every row and its writes reach the last replica."""
    need(['kubectl', 'node', 'npm'])
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix='ltxfs-k8s-') as tmp, \
            ph.Pod() as pod:
        objs = rendered(tmp, 'etcd', token)
        sts = find(objs, 'StatefulSet', 'ltxfs')
        ests = find(objs, 'StatefulSet', 'etcd')
        c, ec = ltxfs_container(sts), only_container(ests)
        image = pod.image()
        eimage = etcd_image()
        log('images %s, %s in place of %s, %s' % (
            image, eimage, c['image'], ec['image']))
        net = pod.network()
        enames = start_sts(pod, net, ests, objs, eimage, tmp)
        wait_ready(pod, enames,
                   lambda ip: probe_url(ec, 'readinessProbe', ip), 60)
        log('etcd pods ready: ' + ', '.join(enames))
        names = start_sts(pod, net, sts, objs, image, tmp)
        ips = wait_ready(pod, names,
                         lambda ip: probe_url(c, 'readinessProbe', ip), 90)
        check_etcd_pods(pod, c, names, ips, token)


def check_etcd_pods(pod, c, names, ips, token):
    prim = wait_for(lambda: (lambda p: len(p) == 1 and p[0])(
        primaries(ips, token)), 30, 'one primary')
    for n in names:
        if 'sleep infinity' not in processes(pod, n):
            fail('%s: the exec application is not running' % n)
    reps = [n for n in names if n != prim]
    log('primary %s; every pod ready, exec application runs' % prim)
    pod.sql(prim, "INSERT INTO kv VALUES('a', 'before-handoff')")
    for r in reps:
        wait_row(pod, r, 'a', 'before-handoff')
    hook = c['lifecycle']['preStop']['exec']['command']
    pod.exec(prim, *hook)
    new = wait_for(lambda: (lambda p: len(p) == 1 and p[0] != prim and p[0])(
        primaries(ips, token)), 15, 'another primary after the preStop hook')
    said = [l for l in pod.logs(prim, 200).splitlines() if '(HTTP ' in l]
    if not said or '(HTTP 200)' not in said[-1]:
        fail('%s: the preStop hook did not say 200: %s' % (prim, said))
    log('preStop hook on %s: %s; primary now %s' % (prim, said[-1].strip(),
                                                     new))
    pod.stop(prim)
    wait_row(pod, new, 'a', 'before-handoff')
    pod.sql(new, "INSERT INTO kv VALUES('b', 'after-handoff')")
    last = [n for n in reps if n != new][0]
    wait_row(pod, last, 'b', 'after-handoff')
    wait_row(pod, last, 'a', 'before-handoff')
    log('after %s stopped: %s has every row, its write read on %s' % (
        prim, new, last))


def render_main():
    try:
        test_render()
    except TestFailure as e:
        log('FAIL: %s' % e)
        sys.exit(1)
    log('1 passed, 0 failed')


def main():
    modes = {'render': render_main,
             'pods': lambda: ph.main(run_pods),
             'etcd-pods': lambda: ph.main(run_etcd_pods),
             'tls-pods': lambda: ph.main(run_tls_pods)}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.stderr.write('usage: test_kubernetes.py %s\n' %
                         '|'.join(modes))
        return 2
    modes[sys.argv[1]]()
    return 0


if __name__ == '__main__':
    sys.exit(main())
