#!/usr/bin/env python3
"""deploy/kubernetes/ and deploy/container/Dockerfile checked against the programs they run.

  test_k8s_manifests.py SOURCE_DIR KEELD KEEL_GATEWAY KEELCTL KEEL_BENCH

Every YAML document is parsed with a real parser (PyYAML); each kustomization (the base and the
overlays five-members/ and zone-from-node/) is rendered by a small renderer here (resources,
JSON6902 and strategic-merge patches, namespace) and, where kubectl is installed, also by
`kubectl kustomize` (offline). Each rendering must hold together: selectors match the pod
labels; serviceName is a headless Service that publishes pods before they are ready; replicas
odd and >= 3; --initial-cluster names exactly <sts>-0 .. <sts>-(N-1) at their DNS names under
that Service and the container's peer port; every keeld / keel-gateway flag is one the built
program's --help describes; $(VAR)s are defined; the probes ask keeld's metrics port for paths
server/metrics.c answers; zones spread on topology.kubernetes.io/zone; the PDB takes the members;
the gateway's --endpoints are every member's client address. The members' start script is run
with a stub keeld. The Dockerfile's runtime stage must install the Debian package of every
shared library the built programs load (readelf NEEDED -> dpkg -S).

Then each check is shown to fail: broken copies of the manifests and of the Dockerfile are
written to a temporary directory and must be refused, each for its own reason.
"""
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("SKIP: PyYAML (Debian: python3-yaml) is not installed")
    sys.exit(77)

ZONE_KEY = "topology.kubernetes.io/zone"
ZONE_FIELD = "metadata.labels['topology.kubernetes.io/zone']"
NS = "testns"  # what $(POD_NAMESPACE)-style variables stand for here
POD_IP = "10.1.2.3"  # and status.podIP
FLAG = re.compile(r"(?<![A-Za-z0-9-])--([a-z][a-z0-9-]*)")
VAR = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "Namespace", "StorageClass"}


# ---------------------------------------------------------------------------------------------
# Rendering kustomizations

def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def smp(base, patch):
    """A strategic merge, enough for pod specs: maps merge, lists of maps merge by name
    (volumeMounts by mountPath), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = smp(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(
            isinstance(x, dict) for x in base + patch):
        key = "mountPath" if any("mountPath" in x for x in base + patch) else "name"
        if all(key in x for x in base + patch):
            out = list(base)
            for p in patch:
                i = next((i for i, b in enumerate(out) if b[key] == p[key]), None)
                if i is None:
                    out.append(p)
                else:
                    out[i] = smp(out[i], p)
            return out
    return patch


def json_patch(doc, ops):
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            last = len(parent) if last == "-" else int(last)
        if op["op"] == "replace":
            if isinstance(parent, list) and not 0 <= last < len(parent) or \
                    isinstance(parent, dict) and last not in parent:
                raise ValueError(f"json patch: nothing at {op['path']} to replace")
            parent[last] = op["value"]
        elif op["op"] == "add":
            if isinstance(parent, list):
                parent.insert(last, op["value"])
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[last]
        elif op["op"] == "test":
            if parent[last] != op["value"]:
                raise ValueError(f"json patch: test at {op['path']} failed")
        else:
            raise ValueError(f"json patch: op {op['op']} is not supported here")
    return doc


def render(directory):
    k = load_yaml(os.path.join(directory, "kustomization.yaml"))[0]
    docs = []
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(directory, r))
        docs += render(p) if os.path.isdir(p) else load_yaml(p)
    for p in k.get("patches", []):
        if "path" in p:
            for patch in load_yaml(os.path.join(directory, p["path"])):
                hits = [i for i, d in enumerate(docs) if d["kind"] == patch["kind"]
                        and d["metadata"]["name"] == patch["metadata"]["name"]]
                if not hits:
                    raise ValueError(f"{p['path']}: no {patch['kind']} {patch['metadata']['name']}")
                for i in hits:
                    docs[i] = smp(docs[i], patch)
        else:
            t = p["target"]
            hits = [d for d in docs if d["kind"] == t["kind"] and d["metadata"]["name"] == t["name"]]
            if not hits:
                raise ValueError(f"patch target {t} matches nothing")
            for d in hits:
                json_patch(d, yaml.safe_load(p["patch"]))
    if "namespace" in k:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = k["namespace"]
            for s in d.get("subjects", []):
                if s.get("kind") == "ServiceAccount":
                    s["namespace"] = k["namespace"]
    return docs


def kubectl_render(directory):
    """`kubectl kustomize`'s rendering, or None without a kubectl whose kustomize knows the
    `patches:` field (v4 and later; Debian 12's kubernetes-client 1.20 has v2)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    v = subprocess.run([kubectl, "version", "--client"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60, check=False,
                       env=dict(os.environ, KUBECONFIG=os.devnull))
    m = re.search(r"Kustomize Version: v(\d+)", v.stdout.decode(errors="replace"))
    if m is None or int(m.group(1)) < 4:
        return None
    r = subprocess.run([kubectl, "kustomize", directory], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120, check=False,
                       env=dict(os.environ, KUBECONFIG=os.devnull))
    if r.returncode != 0:
        raise ValueError(f"kubectl kustomize {directory}: {r.stderr.decode(errors='replace')}")
    return [d for d in yaml.safe_load_all(r.stdout) if d is not None]


# ---------------------------------------------------------------------------------------------
# Checks of one rendering

def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels", {})


def runs(container, program):
    cmd = container.get("command") or []
    words = [os.path.basename(w) for w in cmd] + [
        os.path.basename(w) for line in cmd for w in re.findall(r"exec\s+(\S+)", line)]
    return program in words


def parse_args(args):
    """'--flag=value' and '--flag value' into [(flag, value)]."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            out.append((None, a))
        elif "=" in a:
            f, v = a[2:].split("=", 1)
            out.append((f, v))
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append((a[2:], args[i + 1]))
            i += 1
        else:
            out.append((a[2:], None))
        i += 1
    return out


def script_of(container):
    cmd = container.get("command") or []
    if len(cmd) >= 3 and os.path.basename(cmd[0]) in ("sh", "bash") and cmd[1].startswith("-"):
        return cmd[2]
    return None


def script_flags(container, program):
    """Flags the start script itself passes to `exec program`."""
    s = script_of(container)
    if s is None:
        return []
    out = []
    for line in s.splitlines():
        m = re.search(r"exec\s+(\S+)(.*)", line)
        if m and os.path.basename(m.group(1)) == program:
            out += [f for f, _ in parse_args([w for w in shlex.split(m.group(2))
                                              if w.startswith("--")]) if f]
    return out


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def field_var(container, field):
    for name, e in env_map(container).items():
        if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == field:
            return name
    return None


def expand(s, values):
    return VAR.sub(lambda m: values.get(m.group(1), m.group(0)), s).replace("$$", "$")


def container_port(container, ref):
    for p in container.get("ports", []):
        if ref in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return None


def host_port(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port) if port.isdigit() else None


def is_member_dns(host, pod, service):
    parts = host.split(".")
    return (len(parts) >= 2 and parts[0] == pod and parts[1] == service
            and (len(parts) < 3 or parts[2] == NS) and (len(parts) < 4 or parts[3] == "svc"))


def check_flags(errors, where, used, known, program):
    for f in used:
        if f not in known:
            errors.append(f"{where}: --{f} is not a flag `{program} --help` describes")


def check_vars(errors, where, container):
    defined = set(env_map(container))
    for s in (container.get("command") or []) + (container.get("args") or []):
        for v in VAR.findall(s):
            if v not in defined:
                errors.append(f"{where}: $({v}) is not an env var of the container "
                              "(Kubernetes would pass it on literally)")


def check(docs, keeld_flags, gateway_flags, metrics_paths, image_uid):
    errors = []
    for d in docs:
        if not (isinstance(d, dict) and d.get("apiVersion") and d.get("kind")
                and d.get("metadata", {}).get("name")):
            errors.append(f"a document without apiVersion, kind and metadata.name: {str(d)[:80]}")
    if errors:
        return errors
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}

    # ---- the members ----
    sts_list = [s for s in by_kind.get("StatefulSet", [])
                if any(runs(c, "keeld") for c in s["spec"]["template"]["spec"]["containers"])]
    if len(sts_list) != 1:
        return errors + [f"expected one StatefulSet running keeld, found {len(sts_list)}"]
    sts = sts_list[0]
    name, spec = sts["metadata"]["name"], sts["spec"]
    where = f"StatefulSet {name}"
    pod = spec["template"]["spec"]
    labels = pod_labels(sts)
    if not matches(spec.get("selector", {}).get("matchLabels"), labels):
        errors.append(f"{where}: selector.matchLabels does not match the pod template's labels")
    n = spec.get("replicas", 1)
    if not isinstance(n, int) or n < 3 or n % 2 == 0:
        errors.append(f"{where}: replicas {n} is not odd and >= 3")
    if spec.get("podManagementPolicy") != "Parallel":
        errors.append(f"{where}: podManagementPolicy is not Parallel (members must start together)")
    svc_name = spec.get("serviceName")
    svc = services.get(svc_name)
    if svc is None:
        errors.append(f"{where}: serviceName {svc_name} names no Service")
        svc = {"spec": {}}
    if svc["spec"].get("clusterIP") != "None":
        errors.append(f"{where}: Service {svc_name} is not headless (clusterIP: None)")
    if svc["spec"].get("publishNotReadyAddresses") is not True:
        errors.append(f"{where}: Service {svc_name} does not publishNotReadyAddresses")
    if not matches(svc["spec"].get("selector"), labels):
        errors.append(f"{where}: Service {svc_name} does not select the members")

    keeld = [c for c in pod["containers"] if runs(c, "keeld")][0]
    cwhere = f"{where} container {keeld['name']}"
    check_vars(errors, cwhere, keeld)
    args = parse_args(keeld.get("args") or [])
    flags = {f: v for f, v in args if f}
    stray = [v for f, v in args if f is None]
    if stray:
        errors.append(f"{cwhere}: arguments that are not flags: {stray}")
    used = [f for f, _ in args if f] + script_flags(keeld, "keeld")
    check_flags(errors, cwhere, used, keeld_flags, "keeld")
    for req in ("name", "data-dir", "listen-client", "listen-peer", "listen-metrics",
                "initial-cluster"):
        if req not in flags:
            errors.append(f"{cwhere}: no --{req}")
    if "zone" not in used:
        errors.append(f"{cwhere}: keeld is not given --zone")
    pod_var = field_var(keeld, "metadata.name")
    ns_var = field_var(keeld, "metadata.namespace")
    zone_var = field_var(keeld, ZONE_FIELD)
    if pod_var is None or flags.get("name") != f"$({pod_var})":
        errors.append(f"{cwhere}: --name is not the pod's name (metadata.name via the downward API)")
    script = script_of(keeld)
    if zone_var is None or script is None or zone_var not in script:
        errors.append(f"{cwhere}: the zone is not taken from the pod's {ZONE_KEY} label")
    values = {ns_var or "": NS}
    peer_port = container_port(keeld, "peer")
    client_port = container_port(keeld, "client")
    metrics_port = container_port(keeld, "metrics")
    if peer_port is None or client_port is None or metrics_port is None:
        errors.append(f"{cwhere}: ports named client, peer and metrics are not all declared")
    svc_ports = {p.get("port") for p in svc["spec"].get("ports", [])}
    if peer_port not in svc_ports:
        errors.append(f"{where}: Service {svc_name} does not carry the peer port {peer_port}")

    entries = [e for e in expand(flags.get("initial-cluster", ""), values).split(",") if e]
    names = [e.split("=", 1)[0] for e in entries]
    want = [f"{name}-{i}" for i in range(n if isinstance(n, int) else 0)]
    if names != want:
        errors.append(f"{cwhere}: --initial-cluster lists {names}, not {want}")
    for e in entries:
        member, _, addr = e.partition("=")
        host, port = host_port(addr.split("@")[0])
        if not is_member_dns(host, member, svc_name):
            errors.append(f"{cwhere}: --initial-cluster entry {e} is not "
                          f"{member}.{svc_name}.<namespace>.svc...")
        if port != peer_port:
            errors.append(f"{cwhere}: --initial-cluster entry {e}: port {port}, "
                          f"the container's peer port is {peer_port}")
    # keeld's listen addresses are IPv4 literals. A member's --initial-cluster entry is the
    # pod's DNS name, so --listen-peer has that entry's port (on 0.0.0.0 or the pod's IP).
    # --listen-client is also the address keeld announces to peers and clients: the pod's IP.
    ip_var = field_var(keeld, "status.podIP")
    for i in range(min(n, 16) if isinstance(n, int) else 0):
        me = f"{name}-{i}"
        v = dict(values, **{pod_var or "": me, ip_var or "": POD_IP})
        phost, pport = host_port(expand(flags.get("listen-peer", ":"), v))
        entry = next((e.partition("=")[2].split("@")[0] for e in entries
                      if e.partition("=")[0] == me), None)
        if phost not in ("0.0.0.0", POD_IP):
            errors.append(f"{cwhere}: on {me}, --listen-peer {phost}:{pport} is not 0.0.0.0 or "
                          "the pod's IP (status.podIP): keeld listens on IPv4 literals")
        if entry is not None and pport != host_port(entry)[1]:
            errors.append(f"{cwhere}: on {me}, --listen-peer port {pport} is not its "
                          f"--initial-cluster entry's {entry} (keeld refuses to start)")
        chost, cport = host_port(expand(flags.get("listen-client", ":"), v))
        if chost != POD_IP or cport != client_port:
            errors.append(f"{cwhere}: on {me}, --listen-client {chost}:{cport} is not the pod's IP "
                          f"(status.podIP; keeld announces it to clients) with the client port "
                          f"{client_port}")
    mhost, mport = host_port(flags.get("listen-metrics", ":"))
    if mport != metrics_port:
        errors.append(f"{cwhere}: --listen-metrics port {mport} is not the metrics port "
                      f"{metrics_port}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez"),
                        ("startupProbe", None)):
        p = keeld.get(probe)
        if p is None:
            if path:
                errors.append(f"{cwhere}: no {probe}")
            continue
        get = p.get("httpGet", {})
        port = container_port(keeld, get.get("port"))
        if port != mport:
            errors.append(f"{cwhere}: {probe} asks port {get.get('port')}, "
                          f"not --listen-metrics' {mport}")
        if get.get("path") not in metrics_paths or (path and get.get("path") != path):
            errors.append(f"{cwhere}: {probe} path {get.get('path')} is not {path or 'a path'} "
                          f"of the ones server/metrics.c answers {sorted(metrics_paths)}")
    mounts = {m["name"]: m["mountPath"] for m in keeld.get("volumeMounts", [])}
    vcts = [v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])]
    if not vcts or not any(v in mounts for v in vcts):
        errors.append(f"{where}: no volumeClaimTemplate mounted into keeld")
    elif not any(flags.get("data-dir", "").startswith(mounts[v].rstrip("/") + "/")
                 or flags.get("data-dir") == mounts[v] for v in vcts if v in mounts):
        errors.append(f"{cwhere}: --data-dir {flags.get('data-dir')} is not on the claimed volume")
    tsc = pod.get("topologySpreadConstraints", [])
    zone_c = [c for c in tsc if c.get("topologyKey") == ZONE_KEY]
    if not any(c.get("maxSkew") == 1 and c.get("whenUnsatisfiable") == "DoNotSchedule"
               and matches(c.get("labelSelector", {}).get("matchLabels"), labels) for c in zone_c):
        errors.append(f"{where}: no topologySpreadConstraint on {ZONE_KEY} with maxSkew 1, "
                      "DoNotSchedule, selecting the members")
    if not any(c.get("topologyKey") == "kubernetes.io/hostname" for c in tsc):
        errors.append(f"{where}: no topologySpreadConstraint on kubernetes.io/hostname")
    check_security(errors, where, pod, image_uid)
    if not keeld.get("resources", {}).get("requests"):
        errors.append(f"{cwhere}: no resource requests")
    if not pod.get("terminationGracePeriodSeconds"):
        errors.append(f"{where}: no terminationGracePeriodSeconds")

    # ---- the disruption budget ----
    pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
            if matches(p["spec"].get("selector", {}).get("matchLabels"), labels)]
    if len(pdbs) != 1:
        errors.append(f"{where}: {len(pdbs)} PodDisruptionBudgets select the members, not one")
    elif pdbs[0]["spec"].get("maxUnavailable") != 1:
        errors.append(f"{where}: the PodDisruptionBudget's maxUnavailable is not 1")

    # ---- the gateway ----
    gws = [d for d in by_kind.get("Deployment", [])
           if any(runs(c, "keel-gateway") for c in d["spec"]["template"]["spec"]["containers"])]
    if len(gws) != 1:
        return errors + [f"expected one Deployment running keel-gateway, found {len(gws)}"]
    gw = gws[0]
    gwhere = f"Deployment {gw['metadata']['name']}"
    glabels = pod_labels(gw)
    if not matches(gw["spec"].get("selector", {}).get("matchLabels"), glabels):
        errors.append(f"{gwhere}: selector.matchLabels does not match the pod template's labels")
    if matches(svc["spec"].get("selector"), glabels):
        errors.append(f"{where}: Service {svc_name} selects the gateway's pods too")
    for p in by_kind.get("PodDisruptionBudget", []):
        sel = p["spec"].get("selector", {}).get("matchLabels")
        if matches(sel, labels) and matches(sel, glabels):
            errors.append(f"PodDisruptionBudget {p['metadata']['name']} selects members and "
                          "gateways together")
    if gw["spec"].get("replicas", 1) < 2:
        errors.append(f"{gwhere}: fewer than 2 replicas")
    gpod = gw["spec"]["template"]["spec"]
    if not any(c.get("topologyKey") == ZONE_KEY for c in gpod.get("topologySpreadConstraints", [])):
        errors.append(f"{gwhere}: not spread across zones")
    check_security(errors, gwhere, gpod, image_uid)
    g = [c for c in gpod["containers"] if runs(c, "keel-gateway")][0]
    check_vars(errors, gwhere, g)
    gargs = parse_args(g.get("args") or [])
    gflags = {f: v for f, v in gargs if f}
    check_flags(errors, gwhere, [f for f, _ in gargs if f], gateway_flags, "keel-gateway")
    gvalues = {field_var(g, "metadata.namespace") or "": NS}
    eps = [e for e in expand(gflags.get("endpoints", ""), gvalues).split(",") if e]
    want_eps = set()
    for i in range(n if isinstance(n, int) else 0):
        want_eps.add(f"{name}-{i}")
    got = {}
    for e in eps:
        host, port = host_port(e)
        member = host.split(".")[0]
        if not is_member_dns(host, member, svc_name) or port != client_port:
            errors.append(f"{gwhere}: --endpoints entry {e} is not a member's DNS name with the "
                          f"client port {client_port}")
        got[member] = e
    if set(got) != want_eps:
        errors.append(f"{gwhere}: --endpoints names {sorted(got)}, not every member "
                      f"{sorted(want_eps)}")
    lhost, lport = host_port(gflags.get("listen", ":"))
    if container_port(g, lport) is None:
        errors.append(f"{gwhere}: --listen port {lport} is not a container port")
    front = [s for s in services.values() if matches(s["spec"].get("selector"), glabels)]
    if len(front) != 1:
        errors.append(f"{gwhere}: {len(front)} Services select the gateway, not one")
    else:
        fs = front[0]
        ports = fs["spec"].get("ports", [])
        if not any(container_port(g, p.get("targetPort", p.get("port"))) == lport for p in ports):
            errors.append(f"{gwhere}: Service {fs['metadata']['name']} does not forward to "
                          f"--listen's port {lport}")
        urls = expand(gflags.get("advertise-client-urls", ""), gvalues).split(",")
        for u in urls:
            m = re.fullmatch(r"https?://([^/:]+):(\d+)/?", u)
            if not m or m.group(1).split(".")[0] != fs["metadata"]["name"] or \
                    int(m.group(2)) not in {p.get("port") for p in ports}:
                errors.append(f"{gwhere}: --advertise-client-urls {u!r} is not the Service "
                              f"{fs['metadata']['name']}'s name and port")
    return errors


def check_security(errors, where, pod, image_uid):
    sc = pod.get("securityContext", {})
    if sc.get("runAsNonRoot") is not True:
        errors.append(f"{where}: runAsNonRoot is not true")
    if sc.get("runAsUser") in (0, None) or (image_uid is not None and sc.get("runAsUser") != image_uid):
        errors.append(f"{where}: runAsUser {sc.get('runAsUser')} is not the image's user {image_uid}")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        csc = c.get("securityContext", {})
        if csc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{where} container {c['name']}: allowPrivilegeEscalation is not false")


def check_zone_overlay(docs):
    """zone-from-node/: an init container writes the zone where the start script reads it, with
    a ServiceAccount that may get nodes and nothing more."""
    errors = []
    sts = [d for d in docs if d["kind"] == "StatefulSet"][0]
    pod = sts["spec"]["template"]["spec"]
    keeld = [c for c in pod["containers"] if runs(c, "keeld")][0]
    inits = pod.get("initContainers", [])
    zone_file = re.search(r"read -r zone < ([^\s;]+)", script_of(keeld) or "")
    if not inits or not zone_file:
        return ["zone-from-node: no init container, or the start script reads no zone file"]
    path = zone_file.group(1)
    init = inits[0]
    if field_var(init, "spec.nodeName") is None:
        errors.append("zone-from-node: the init container is not given spec.nodeName")
    if path not in (script_of(init) or ""):
        errors.append(f"zone-from-node: the init container does not write {path}")
    d = os.path.dirname(path)
    vol_init = {m["mountPath"]: m["name"] for m in init.get("volumeMounts", [])}
    vol_main = {m["mountPath"]: m["name"] for m in keeld.get("volumeMounts", [])}
    if d not in vol_init or vol_init.get(d) != vol_main.get(d):
        errors.append(f"zone-from-node: {d} is not one volume shared by the init container and keeld")
    sa = pod.get("serviceAccountName")
    roles = {r["metadata"]["name"]: r for r in docs if r["kind"] == "ClusterRole"}
    bound = [b for b in docs if b["kind"] == "ClusterRoleBinding"
             and any(s.get("kind") == "ServiceAccount" and s.get("name") == sa
                     and s.get("namespace") == sts["metadata"].get("namespace")
                     for s in b.get("subjects", []))]
    rules = [r for b in bound for r in roles.get(b["roleRef"]["name"], {}).get("rules", [])]
    if not any("nodes" in r.get("resources", []) and "get" in r.get("verbs", []) for r in rules):
        errors.append(f"zone-from-node: ServiceAccount {sa} (in the StatefulSet's namespace) "
                      "may not get nodes")
    if any(set(r.get("verbs", [])) - {"get"} or set(r.get("resources", [])) - {"nodes"}
           for r in rules):
        errors.append("zone-from-node: the role grants more than get on nodes")
    if any("serviceaccount" in m["mountPath"] for m in keeld.get("volumeMounts", [])) or \
            pod.get("automountServiceAccountToken") is not False:
        errors.append("zone-from-node: keeld's container gets the API token")
    return errors


def run_start_script(docs, tmp):
    """The members' start script, run by sh with a stub keeld that prints its arguments."""
    sts = [d for d in docs if d["kind"] == "StatefulSet"][0]
    keeld = [c for c in sts["spec"]["template"]["spec"]["containers"] if runs(c, "keeld")][0]
    cmd = keeld["command"]
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir, exist_ok=True)
    with open(os.path.join(bindir, "keeld"), "w") as f:
        f.write('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    os.chmod(os.path.join(bindir, "keeld"), 0o755)
    zone_var = field_var(keeld, ZONE_FIELD)
    errors = []
    for zone in ("us-east-1a", ""):
        env = {"PATH": bindir + ":/usr/bin:/bin", zone_var: zone}
        r = subprocess.run(cmd + ["--name=keel-0", "--x=y z"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30, check=False)
        out = r.stdout.decode().splitlines()
        if zone and (r.returncode != 0 or out != [f"--zone={zone}", "--name=keel-0", "--x=y z"]):
            errors.append(f"start script with zone {zone}: exit {r.returncode}, keeld got {out}")
        if not zone and (r.returncode == 0 or out or b"zone" not in r.stderr):
            errors.append(f"start script without a zone: exit {r.returncode}, keeld got {out}, "
                          "instead of refusing to start with a message")
    return errors


# ---------------------------------------------------------------------------------------------
# The Dockerfile

SANITIZER_RUNTIMES = ("libasan", "libubsan", "liblsan", "libtsan")
IN_BASE = ("libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "ld-linux",
           "libgcc_s.so")  # libc6 and libgcc-s1: in every Debian image


def stages(text):
    out = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.I)
            out.append({"image": m.group(1), "name": m.group(2), "lines": []})
        elif out:
            out[-1]["lines"].append((word.upper(), rest.strip()))
    return out


def apt_packages(lines):
    pkgs = []
    for word, rest in lines:
        if word != "RUN":
            continue
        for part in re.split(r"&&|;|\|\|", rest):
            toks = part.split()
            if "install" in toks and toks[:1] in (["apt-get"], ["apt"]):
                pkgs += [t for t in toks[toks.index("install") + 1:] if not t.startswith("-")]
    return pkgs


def needed_packages(binaries):
    """Debian packages of the shared libraries the binaries load directly, or None when the
    tools to find out (readelf, ldd, dpkg) are missing."""
    if not all(shutil.which(t) for t in ("readelf", "ldd", "dpkg")):
        return None
    pkgs = {}
    for b in binaries:
        dyn = subprocess.run(["readelf", "-d", b], stdout=subprocess.PIPE, check=True).stdout.decode()
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
        paths = dict(re.findall(r"^\s*(\S+) => (\S+)", subprocess.run(
            ["ldd", b], stdout=subprocess.PIPE, check=True).stdout.decode(), re.M))
        for so in needed:
            if so.startswith(SANITIZER_RUNTIMES) or so.startswith(IN_BASE):
                continue
            path = paths.get(so)
            if path is None:
                raise ValueError(f"{b}: ldd does not find {so}")
            cands = {path, os.path.realpath(path)}
            cands |= {re.sub(r"^/lib/", "/usr/lib/", c) for c in cands}
            cands |= {re.sub(r"^/usr/lib/", "/lib/", c) for c in cands}
            pkg = None
            for c in sorted(cands):
                r = subprocess.run(["dpkg", "-S", c], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, check=False)
                if r.returncode == 0:
                    pkg = r.stdout.decode().split(":")[0].strip()
                    break
            if pkg is None:
                raise ValueError(f"{b}: no Debian package owns {path} ({so})")
            pkgs.setdefault(pkg, set()).add(so)
    return pkgs


def check_dockerfile(text, needed):
    errors = []
    st = stages(text)
    if len(st) < 2:
        return [f"Dockerfile: {len(st)} stage(s), not a build and a runtime stage"]
    build, runtime = st[0], st[-1]
    if not build["image"].startswith("debian:bookworm") or not build["name"]:
        errors.append("Dockerfile: the first stage is not a named debian:bookworm build stage")
    runs_ = " ".join(r for w, r in build["lines"] if w == "RUN")
    for want in ("scripts/deps.sh", "CMAKE_BUILD_TYPE=Release", "cmake --install"):
        if want not in runs_:
            errors.append(f"Dockerfile: the build stage does not run {want}")
    if not runtime["image"].startswith("debian:bookworm-slim"):
        errors.append("Dockerfile: the runtime stage is not debian:bookworm-slim")
    if not any(w == "COPY" and f"--from={build['name']}" in r for w, r in runtime["lines"]):
        errors.append("Dockerfile: the runtime stage copies nothing from the build stage")
    pkgs = apt_packages(runtime["lines"])
    for p in pkgs:
        if p.endswith("-dev") or p in ("gcc", "cmake", "make", "clang"):
            errors.append(f"Dockerfile: the runtime stage installs the build tool or header {p}")
    if needed is not None:
        for p, sos in sorted(needed.items()):
            if p not in pkgs:
                errors.append(f"Dockerfile: the runtime stage lacks {p} ({', '.join(sorted(sos))})")
    users = [r for w, r in runtime["lines"] if w == "USER"]
    uid = None
    if not users or users[-1].split(":")[0] in ("root", "0"):
        errors.append("Dockerfile: the runtime stage does not switch to a non-root USER")
    elif users[-1].split(":")[0].isdigit():
        uid = int(users[-1].split(":")[0])
    else:
        errors.append("Dockerfile: USER is a name; give the uid, which runAsNonRoot can verify")
    entry = [r for w, r in runtime["lines"] if w == "ENTRYPOINT"]
    if not entry or "keeld" not in entry[-1]:
        errors.append("Dockerfile: keeld is not the ENTRYPOINT")
    return errors, uid


# ---------------------------------------------------------------------------------------------
# Broken copies: every check must refuse them

def sts_of(docs):
    return [d for d in docs if d["kind"] == "StatefulSet"][0]


def keeld_of(docs):
    return sts_of(docs)["spec"]["template"]["spec"]["containers"][0]


def gw_of(docs):
    return [d for d in docs if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]["containers"][0]


def set_arg(container, flag, value):
    args = container["args"]
    for i, a in enumerate(args):
        if a.startswith(f"--{flag}="):
            args[i] = f"--{flag}={value}" if value is not None else None
            container["args"] = [a for a in args if a is not None]
            return
    raise AssertionError(f"no --{flag} to break")


def get_arg(container, flag):
    return next(a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{flag}="))


def svc(docs, name):
    return [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name][0]


def pdb(docs):
    return [d for d in docs if d["kind"] == "PodDisruptionBudget"][0]


def drop_member(container, flag, member, sep=","):
    items = get_arg(container, flag).split(sep)
    kept = [i for i in items if not i.startswith(member)]
    assert len(kept) == len(items) - 1, (flag, member)
    set_arg(container, flag, sep.join(kept))


MUTATIONS = [
    ("even replicas", lambda d: sts_of(d)["spec"].update(replicas=4), "replicas"),
    ("replicas 5, three listed", lambda d: sts_of(d)["spec"].update(replicas=5), "--initial-cluster lists"),
    ("OrderedReady", lambda d: sts_of(d)["spec"].update(podManagementPolicy="OrderedReady"), "Parallel"),
    ("serviceName renamed", lambda d: sts_of(d)["spec"].update(serviceName="keel-peers"), "names no Service"),
    ("peer Service not headless", lambda d: svc(d, "keel-peer")["spec"].pop("clusterIP"), "headless"),
    ("not-ready pods unpublished",
     lambda d: svc(d, "keel-peer")["spec"].update(publishNotReadyAddresses=False), "publishNotReady"),
    ("selector off the labels",
     lambda d: sts_of(d)["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/component": "members"}),
     "selector.matchLabels"),
    ("member missing from --initial-cluster", lambda d: drop_member(keeld_of(d), "initial-cluster", "keel-2="),
     "--initial-cluster lists"),
    ("wrong peer port",
     lambda d: set_arg(keeld_of(d), "initial-cluster", get_arg(keeld_of(d), "initial-cluster").replace(":2380", ":2390")),
     "peer port"),
    ("peer name under another Service",
     lambda d: set_arg(keeld_of(d), "initial-cluster", get_arg(keeld_of(d), "initial-cluster").replace(".keel-peer.", ".keel.")),
     "is not keel-"),
    ("--listen-peer a host name",
     lambda d: set_arg(keeld_of(d), "listen-peer", "$(POD_NAME).keel-peer.$(POD_NAMESPACE).svc:2380"),
     "is not 0.0.0.0 or the pod's IP"),
    ("--listen-peer on another port", lambda d: set_arg(keeld_of(d), "listen-peer", "0.0.0.0:2480"),
     "--listen-peer port"),
    ("--listen-client on 0.0.0.0", lambda d: set_arg(keeld_of(d), "listen-client", "0.0.0.0:2379"),
     "--listen-client"),
    ("--listen-client on the peer port",
     lambda d: set_arg(keeld_of(d), "listen-client", "$(POD_IP):2380"), "--listen-client"),
    ("a flag keeld does not have",
     lambda d: keeld_of(d)["args"].append("--listen-metric=0.0.0.0:2381"), "--listen-metric is not a flag"),
    ("a flag in the start script keeld does not have",
     lambda d: keeld_of(d)["command"].__setitem__(2, keeld_of(d)["command"][2].replace("--zone=", "--zones=")),
     "--zones is not a flag"),
    ("undefined variable",
     lambda d: keeld_of(d).update(env=[e for e in keeld_of(d)["env"] if e["name"] != "POD_NAMESPACE"]),
     "$(POD_NAMESPACE) is not an env var"),
    ("--name not the pod name", lambda d: set_arg(keeld_of(d), "name", "keel"), "--name"),
    ("readiness on the client port",
     lambda d: keeld_of(d)["readinessProbe"]["httpGet"].update(port="client"), "readinessProbe asks port"),
    ("readiness path metrics.c does not answer",
     lambda d: keeld_of(d)["readinessProbe"]["httpGet"].update(path="/ready"), "readinessProbe path"),
    ("metrics on another port", lambda d: set_arg(keeld_of(d), "listen-metrics", "0.0.0.0:9090"), "--listen-metrics port"),
    ("zone spread on the old key",
     lambda d: sts_of(d)["spec"]["template"]["spec"]["topologySpreadConstraints"][0].update(
         topologyKey="failure-domain.beta.kubernetes.io/zone"), "topologySpreadConstraint on topology"),
    ("zone spread allowed to skew",
     lambda d: sts_of(d)["spec"]["template"]["spec"]["topologySpreadConstraints"][0].update(
         whenUnsatisfiable="ScheduleAnyway"), "topologySpreadConstraint on topology"),
    ("zone not from the label",
     lambda d: [e.update(valueFrom={"fieldRef": {"fieldPath": "spec.nodeName"}})
                for e in keeld_of(d)["env"] if e["name"] == "POD_ZONE"], "zone is not taken"),
    ("PDB selects the gateway",
     lambda d: pdb(d)["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/component": "gateway"}),
     "PodDisruptionBudgets select the members"),
    ("PDB allows two down", lambda d: pdb(d)["spec"].update(maxUnavailable=2), "maxUnavailable"),
    ("data dir off the volume", lambda d: set_arg(keeld_of(d), "data-dir", "/tmp/keel"), "--data-dir"),
    ("runs as root", lambda d: sts_of(d)["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
     "runAsUser"),
    ("gateway misses a member", lambda d: drop_member(gw_of(d), "endpoints", "keel-1."), "--endpoints names"),
    ("gateway on the peer port",
     lambda d: set_arg(gw_of(d), "endpoints", get_arg(gw_of(d), "endpoints").replace(":2379", ":2380")),
     "--endpoints entry"),
    ("gateway flag it does not have",
     lambda d: gw_of(d)["args"].append("--advertise-client-url=http://keel:2379"), "--advertise-client-url is not"),
    ("gateway advertises its own pod",
     lambda d: set_arg(gw_of(d), "advertise-client-urls", "http://0.0.0.0:2379"), "--advertise-client-urls"),
    ("gateway Service forwards elsewhere",
     lambda d: svc(d, "keel")["spec"]["ports"][0].update(targetPort=2380), "does not forward"),
]

def init_of(docs):
    return sts_of(docs)["spec"]["template"]["spec"]["initContainers"][0]


def role_of(docs):
    return [d for d in docs if d["kind"] == "ClusterRole"][0]


def binding_of(docs):
    return [d for d in docs if d["kind"] == "ClusterRoleBinding"][0]


def script_edit(container, old, new):
    assert old in container["command"][2], old
    container["command"][2] = container["command"][2].replace(old, new)


ZONE_MUTATIONS = [
    ("init container writes elsewhere",
     lambda d: script_edit(init_of(d), "> /var/run/keel-zone/zone", "> /tmp/zone"), "does not write"),
    ("init container without its node name",
     lambda d: init_of(d).update(env=[]), "spec.nodeName"),
    ("zone volume not shared",
     lambda d: keeld_of(d).update(volumeMounts=[m for m in keeld_of(d)["volumeMounts"]
                                                if m["mountPath"] != "/var/run/keel-zone"]),
     "not one volume shared"),
    ("role may list nodes", lambda d: role_of(d)["rules"][0].update(verbs=["get", "list"]), "more than get"),
    ("role on pods", lambda d: role_of(d)["rules"][0].update(resources=["pods"]), "may not get nodes"),
    ("binding in another namespace",
     lambda d: binding_of(d)["subjects"][0].update(namespace="default"), "may not get nodes"),
    ("token in keeld", lambda d: sts_of(d)["spec"]["template"]["spec"].update(
        automountServiceAccountToken=True), "gets the API token"),
]

SCRIPT_MUTATIONS = [
    ("starts without a zone", lambda d: script_edit(keeld_of(d), "exit 1", "true"), "without a zone"),
    ("drops the arguments", lambda d: script_edit(keeld_of(d), ' "$@"', ""), "with zone"),
]

DOCKER_MUTATIONS = [
    ("runtime stage without libuv1", lambda t: t.replace(" libuv1 ", " "), "lacks libuv1"),
    ("runtime stage without libraft2", lambda t: t.replace(" libraft2 ", " "), "lacks libraft2"),
    ("runs as root", lambda t: t.replace("USER 10001:10001", "USER root"), "non-root USER"),
    ("one stage", lambda t: re.sub(r"(?s)^.*?(FROM debian:bookworm-slim)", r"\1", t), "stage"),
    ("headers in the runtime", lambda t: t.replace(" libuv1 ", " libuv1 libuv1-dev "), "libuv1-dev"),
    ("no deps.sh", lambda t: t.replace("/src/scripts/deps.sh \\", "true \\"), "deps.sh"),
]


def expect_failures(base_docs, zone_docs, dockerfile, needed, known, tmp):
    """Each broken copy, written out and read back, is refused for the reason it was broken."""
    keeld_flags, gateway_flags, metrics_paths, uid = known
    problems = []
    for what, mutate, expect in MUTATIONS:
        docs = copy.deepcopy(base_docs)
        mutate(docs)
        path = os.path.join(tmp, "broken.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f)
        errs = check(load_yaml(path), keeld_flags, gateway_flags, metrics_paths, uid)
        if not any(expect in e for e in errs):
            problems.append(f"broken copy not refused ({what}): wanted '{expect}', got {errs}")
    for what, mutate, expect in ZONE_MUTATIONS:
        docs = copy.deepcopy(zone_docs)
        mutate(docs)
        path = os.path.join(tmp, "broken.yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f)
        errs = check_zone_overlay(load_yaml(path))
        if not any(expect in e for e in errs):
            problems.append(f"broken zone-from-node not refused ({what}): wanted '{expect}', got {errs}")
    for what, mutate, expect in SCRIPT_MUTATIONS:
        docs = copy.deepcopy(base_docs)
        mutate(docs)
        errs = run_start_script(docs, tmp)
        if not any(expect in e for e in errs):
            problems.append(f"broken start script not refused ({what}): wanted '{expect}', got {errs}")
    for what, mutate, expect in DOCKER_MUTATIONS:
        broken = mutate(dockerfile)
        if broken == dockerfile:
            problems.append(f"Dockerfile mutation '{what}' changed nothing")
            continue
        path = os.path.join(tmp, "Dockerfile")
        with open(path, "w") as f:
            f.write(broken)
        with open(path) as f:
            result = check_dockerfile(f.read(), needed)
        errs = result[0] if isinstance(result, tuple) else result
        if not any(expect in e for e in errs):
            problems.append(f"broken Dockerfile not refused ({what}): wanted '{expect}', got {errs}")
    return problems


# ---------------------------------------------------------------------------------------------

def help_flags(binary):
    r = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60, check=False)
    flags = set(FLAG.findall(r.stdout.decode(errors="replace")))
    if len(flags) < 5:
        raise ValueError(f"{binary} --help lists {len(flags)} flags")
    return flags


def main(argv):
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    src, keeld, gateway, keelctl, bench = argv[1:]
    kdir = os.path.join(src, "deploy", "kubernetes")
    with open(os.path.join(src, "server", "metrics.c")) as f:
        metrics_paths = set(re.findall(r'strcmp\(path, "(/[a-z]+)"\)', f.read()))
    keeld_flags, gateway_flags = help_flags(keeld), help_flags(gateway)
    with open(os.path.join(src, "deploy", "container", "Dockerfile")) as f:
        dockerfile = f.read()
    needed = needed_packages([keeld, gateway, keelctl, bench])
    if needed is None:
        print("note: readelf, ldd or dpkg missing: the Dockerfile's library list is not compared")
    else:
        print("runtime libraries:", ", ".join(f"{p} ({', '.join(sorted(s))})"
                                             for p, s in sorted(needed.items())))
    problems = []
    derrs, uid = check_dockerfile(dockerfile, needed)
    problems += derrs

    # Every YAML file parses.
    for root, _, files in os.walk(kdir):
        for fn in files:
            if fn.endswith((".yaml", ".yml")):
                try:
                    load_yaml(os.path.join(root, fn))
                except yaml.YAMLError as e:
                    problems.append(f"{os.path.join(root, fn)}: {e}")
    known = (keeld_flags, gateway_flags, metrics_paths, uid)
    renderings = {}
    for overlay in (".", "five-members", "zone-from-node"):
        d = os.path.normpath(os.path.join(kdir, overlay))
        renderings[overlay] = [("renderer", render(d))]
        try:
            k = kubectl_render(d)
        except (ValueError, subprocess.TimeoutExpired) as e:
            problems.append(str(e))
            k = None
        if k is not None:
            renderings[overlay].append(("kubectl kustomize", k))
        elif overlay == ".":
            print("note: no kubectl with kustomize v4 or later: rendered here only")
    for overlay, rs in renderings.items():
        for how, docs in rs:
            errs = check(docs, *known)
            if overlay == "zone-from-node":
                errs += check_zone_overlay(docs)
            print(f"{overlay} ({how}): {len(docs)} documents, {'ok' if not errs else 'FAILED'}")
            problems += [f"{overlay} ({how}): {e}" for e in errs]
    if len(renderings["."]) > 1:
        mine, theirs = (sorted(json.dumps(d, sort_keys=True) for d in docs)
                        for _, docs in renderings["."])
        if mine != theirs:
            problems.append("the renderer here and kubectl kustomize disagree on the base")
    tmp = tempfile.mkdtemp(prefix="keel-k8s-")
    try:
        problems += run_start_script(renderings["."][0][1], tmp)
        problems += expect_failures(renderings["."][0][1], renderings["zone-from-node"][0][1],
                                    dockerfile, needed, known, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"broken copies: {len(MUTATIONS)} manifests, {len(ZONE_MUTATIONS)} zone-from-node, "
          f"{len(SCRIPT_MUTATIONS)} start scripts, {len(DOCKER_MUTATIONS)} Dockerfiles")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
