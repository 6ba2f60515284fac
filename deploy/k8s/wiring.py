"""The rendered stack read as one system: every name resolves, and the network allows exactly what it needs.

Each manifest can be valid on its own while the stack does not work: a
Fluentd that sends to a Service nobody renders, a Service whose ``targetPort``
no container declares, a NetworkPolicy that lets the app reach nothing (or
everything). The wiring rule reads the whole render at once:

- **References.** Every in-cluster host named anywhere in the objects (ConfigMap
  data and the config files in it, Secret data, container ``env``, ``args`` and
  ``command``) is a Service rendered in that namespace, or an external endpoint
  the configuration declares; a port named with it is one of that Service's
  ports. Ingress backends and StatefulSet ``serviceName`` name rendered Services.
- **Scrape targets.** Every Prometheus job that discovers pods or endpoints
  keeps at least one rendered target once its relabel ``keep``/``drop`` rules
  run; every PodMonitor scrapes a port its pods declare.
- **Selectors.** Every Service selects a rendered pod template and each of its
  ``targetPort`` is a port those containers declare (by number or name); every
  NetworkPolicy (and every same-namespace peer in it) selects a rendered pod.
- **Reachability.** From the NetworkPolicies alone (``podSelector``,
  ``namespaceSelector`` and their combination, ``ipBlock`` for the outside,
  ports by number or by the destination's port name, default allow where no
  policy isolates a pod), the matrix of who may open a connection to whom, on
  which port. It must equal :func:`needed_flows`: the flows the stack uses,
  computed from the configuration. A missing flow breaks something; an extra
  one is an allow nobody needs.

Pods on the host network (node-exporter) are the node itself for the
network: policies do not apply to them, so they are reached as the VPC.
"""

import base64
import binascii
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import yaml

from deploy.conf import DeploySecrets
from deploy.k8s import backup as backup_commands
from deploy.k8s import cnpg, names, observability
from deploy.k8s.kinds import describe
from deploy.k8s.objects import containers, label_selector_matches, pod_spec, pods, selects

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
# kube-dns, as every namespace's allow-dns policy names it.
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
KUBE_APISERVER_PORT = 443
KUBELET_PORT = 10250
ANYTHING = "anything"
UNISOLATED = "the absence of a policy isolating the pod"

_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
# name.namespace.svc[.cluster.local][:port]
_SVC_HOST = re.compile(rf"(?<![\w.-])({_LABEL})\.({_LABEL})\.svc(?:\.cluster\.local)?\.?(?![\w-])(?::(\d+))?")
# scheme://name[:port] with a one-label host: a Service of the object's own namespace.
_SHORT_URL = re.compile(rf"\b[a-z][a-z0-9+.-]*://(?:[^\s/@'\"]*@)?({_LABEL})(?::(\d+))?(?=[/\s'\"?#]|$)")
# Config files that give host and port on two lines (Fluentd's <match>).
_HOST_PORT_LINES = re.compile(r"^\s*host\s+(\S+)\s*\n\s*port\s+(\d+)\s*$", re.MULTILINE)
_NOT_SERVICES = {"localhost"}


# --- references ----------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    where: str
    name: str
    namespace: str
    port: int | None
    host: str


def _strings(value, path):
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _texts(manifest):
    """(where, text) of every place of ``manifest`` that may name a host."""
    kind, what = manifest.get("kind"), describe(manifest)
    if kind == "ConfigMap":
        for key, text in (manifest.get("data") or {}).items():
            yield f"{what} key {key}", str(text)
    elif kind == "Secret":
        values = dict(manifest.get("stringData") or {})
        for key, encoded in (manifest.get("data") or {}).items():
            try:
                values.setdefault(key, base64.b64decode(encoded, validate=True).decode())
            except (binascii.Error, UnicodeDecodeError, ValueError):
                continue
        for key, text in values.items():
            host = _url_host(str(text))
            if host:
                yield f"{what} key {key}", host
    elif kind == "ExternalSecret":
        # The URLs the operator will write: the template names the host; the password is an expression.
        template = ((manifest.get("spec") or {}).get("target") or {}).get("template") or {}
        for key, text in (template.get("data") or {}).items():
            host = _url_host(str(text))
            if host:
                yield f"{what} key {key}", host
    found = _pod_spec_of(manifest)
    if found is None:
        return
    for container in containers(found):
        where = f"{what} container {container.get('name')!r}"
        for item in container.get("env") or []:
            if "value" in item:
                yield f"{where} env {item.get('name')}", str(item["value"])
        for part in ("command", "args"):
            for path, text in _strings(container.get(part) or [], part):
                yield f"{where} {path}", text


def _url_host(text):
    """``scheme://host[:port]`` of a URL, without what else it holds; None if ``text`` is not one URL.

    Only this part of a Secret value is read: its password must never be
    scanned, nor land in a message.
    """
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+", text):
        return None
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/"


def _pod_spec_of(manifest):
    found = pod_spec(manifest)
    return found[1] if found else None


def references(manifests, links=()):
    """Every in-cluster host the objects name, with the port named beside it (if any); ``links`` are not read."""
    found = []
    for manifest in manifests:
        namespace = manifest.get("metadata", {}).get("namespace", "")
        for where, text in _texts(manifest):
            for link in filter(None, links):
                text = text.replace(link, " ")
            seen = set()
            for match in _HOST_PORT_LINES.finditer(text):
                host_match = _SVC_HOST.fullmatch(match.group(1))
                if host_match:
                    key = (host_match.group(1), host_match.group(2), int(match.group(2)))
                    seen.add(key[:2])
                    found.append(Reference(where, *key, host=match.group(1)))
            for match in _SVC_HOST.finditer(text):
                key = (match.group(1), match.group(2))
                port = int(match.group(3)) if match.group(3) else None
                if port is None and key in seen:
                    continue
                found.append(Reference(where, *key, port, host=match.group(0)))
            for match in _SHORT_URL.finditer(text):
                if match.group(1) in _NOT_SERVICES:
                    continue
                port = int(match.group(2)) if match.group(2) else None
                found.append(Reference(where, match.group(1), namespace, port, host=match.group(1)))
    return list(dict.fromkeys(found))


def links(config):
    """URLs the objects hold for people, never dialled by a pod: the runbook URL of every alert.

    Its host may be one label (``http://wiki/runbooks`` on an intranet) without being a Service of the
    namespace; the same host named anywhere else is still a reference.
    """
    return [config.runbook_url.rstrip("/")]


def _reference_problems(manifests, config):
    services = _services(manifests)
    external = names.external_endpoints(config)
    problems = []
    for ref in references(manifests, links(config)):
        host = ref.host.rsplit(":", 1)[0] if ref.port is not None and ":" in ref.host else ref.host
        if host in external or ref.host in external:
            continue
        shown = f"{host}:{ref.port}" if ref.port is not None else host
        service = services.get((ref.namespace, ref.name))
        if service is None:
            there = sorted(name for namespace, name in services if namespace == ref.namespace)
            problems.append(
                f"{ref.where} names {shown}, but no Service {ref.name!r} is rendered in namespace "
                f"{ref.namespace!r} (there: {', '.join(there) or 'none'}). Build the host with "
                "deploy.k8s.names.service(); a server outside the stack is declared as the external PostgreSQL "
                "or Redis (postgres_host, redis_host), the only ones its NetworkPolicies let the app reach."
            )
            continue
        ports = [p.get("port") for p in service.get("spec", {}).get("ports", [])]
        if ref.port is not None and ref.port not in ports:
            problems.append(
                f"{ref.where} names {shown}, but Service {ref.namespace}/{ref.name} listens on "
                f"{', '.join(str(p) for p in ports)}. Take the port from deploy.k8s.names.service()."
            )
    for manifest in manifests:
        namespace = manifest["metadata"].get("namespace")
        if manifest.get("kind") == "StatefulSet":
            name = manifest.get("spec", {}).get("serviceName")
            if name and (namespace, name) not in services:
                problems.append(f"{describe(manifest)}: its serviceName {name!r} is not a rendered Service.")
        if manifest.get("kind") == "Ingress":
            for backend in _ingress_backends(manifest):
                service = services.get((namespace, backend.get("name")))
                if service is None:
                    problems.append(
                        f"{describe(manifest)}: its backend names Service {backend.get('name')!r}, which is not "
                        "rendered in that namespace."
                    )
                    continue
                wanted = backend.get("port", {})
                if not any(
                    p.get("port") == wanted.get("number") or (wanted.get("name") and p.get("name") == wanted["name"])
                    for p in service["spec"].get("ports", [])
                ):
                    problems.append(
                        f"{describe(manifest)}: its backend port {wanted} is not a port of Service "
                        f"{namespace}/{backend.get('name')}."
                    )
    return problems


def _ingress_backends(ingress):
    spec = ingress.get("spec", {})
    if spec.get("defaultBackend", {}).get("service"):
        yield spec["defaultBackend"]["service"]
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            if path.get("backend", {}).get("service"):
                yield path["backend"]["service"]


def _services(manifests):
    """Rendered Services, and those an operator makes from a rendered custom resource (CloudNativePG's -rw)."""
    found = [m for m in manifests if m.get("kind") == "Service"]
    found += [service for m in manifests if cnpg.is_cluster(m) for service in cnpg.made_services(m)]
    return {(m["metadata"].get("namespace"), m["metadata"]["name"]): m for m in found}


# --- Prometheus service discovery ----------------------------------------------------


def _scrape_configs(manifests):
    """(where, namespace, job) of every scrape job in a rendered prometheus.yml, and of every PodMonitor."""
    for manifest in manifests:
        if manifest.get("kind") != "ConfigMap":
            continue
        for key, text in (manifest.get("data") or {}).items():
            if "scrape_configs" not in str(text):
                continue
            try:
                parsed = yaml.load(str(text), Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader, libyaml's if there)
            except yaml.YAMLError:
                continue
            for job in (parsed or {}).get("scrape_configs") or [] if isinstance(parsed, dict) else []:
                yield f"{describe(manifest)} key {key}", job


def _sd_targets(job, manifests, stack):
    """The meta labels of every target a Kubernetes service-discovery job would find among the rendered objects."""
    for sd in job.get("kubernetes_sd_configs") or []:
        role = sd.get("role")
        wanted = set((sd.get("namespaces") or {}).get("names") or [])
        if role == "pod":
            for pod in stack:
                if wanted and pod.namespace not in wanted:
                    continue
                for name, number, protocol in pod.ports:
                    yield {
                        **_meta_labels("pod", pod.labels),
                        "__meta_kubernetes_namespace": pod.namespace,
                        "__meta_kubernetes_pod_container_port_name": name or "",
                        "__meta_kubernetes_pod_container_port_number": str(number),
                        "__meta_kubernetes_pod_container_port_protocol": protocol,
                    }
        elif role in {"endpoints", "endpointslice", "service"}:
            for (namespace, name), service in _services(manifests).items():
                if wanted and namespace not in wanted:
                    continue
                chosen = [
                    p for p in stack if p.namespace == namespace and selects(service["spec"].get("selector"), p.labels)
                ]
                for port in service["spec"].get("ports") or []:
                    for pod in chosen if role != "service" else [None]:
                        yield {
                            **_meta_labels("service", service["metadata"].get("labels") or {}),
                            **(_meta_labels("pod", pod.labels) if pod else {}),
                            "__meta_kubernetes_namespace": namespace,
                            "__meta_kubernetes_service_name": name,
                            f"__meta_kubernetes_{'service_port' if role == 'service' else 'endpoint_port'}_name": (
                                port.get("name") or ""
                            ),
                        }
        else:
            return  # nodes and ingresses are outside the render: nothing to check


def _meta_labels(kind, labels):
    return {f"__meta_kubernetes_{kind}_label_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v for k, v in labels.items()}


def _kept(target, relabel_configs):
    for rule in relabel_configs or []:
        action = rule.get("action", "replace")
        if action not in {"keep", "drop"}:
            continue
        value = rule.get("separator", ";").join(target.get(label, "") for label in rule.get("source_labels") or [])
        matched = re.fullmatch(rule.get("regex", "(.*)"), value) is not None
        if matched != (action == "keep"):
            return False
    return True


def _scrape_problems(manifests, stack):
    problems = []
    for where, job in _scrape_configs(manifests):
        if not job.get("kubernetes_sd_configs"):
            continue
        targets = list(_sd_targets(job, manifests, stack))
        roles = {sd.get("role") for sd in job["kubernetes_sd_configs"]}
        if roles & {"pod", "endpoints", "endpointslice", "service"} and not any(
            _kept(target, job.get("relabel_configs")) for target in targets
        ):
            problems.append(
                f"{where}: scrape job {job.get('job_name')!r} keeps no rendered target (its relabel rules match no "
                "pod, Service or port of the render). Build its selectors from deploy.k8s.names."
            )
    for monitor in (m for m in manifests if m.get("kind") == "PodMonitor"):
        namespace = monitor["metadata"].get("namespace")
        chosen = [
            p for p in stack
            if p.namespace == namespace and label_selector_matches(monitor["spec"].get("selector"), p.labels)
        ]  # fmt: skip
        for endpoint in monitor["spec"].get("podMetricsEndpoints") or []:
            if not any(_port_number(p, endpoint.get("port")) for p in chosen):
                problems.append(
                    f"{describe(monitor)}: no pod it selects declares the port {endpoint.get('port')!r} it scrapes."
                )
    return problems


# --- pods and selectors --------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """A rendered pod template, as the network sees it."""

    party: str
    namespace: str
    labels: dict = field(hash=False, compare=False)
    ports: tuple = ()  # (name, number, protocol) of every container port
    host_network: bool = False
    workload: str = ""


def stack_pods(manifests):
    found = []
    for manifest, labels, spec in pods(manifests):
        namespace = manifest["metadata"].get("namespace", "")
        component = labels.get(names.COMPONENT) or manifest["metadata"]["name"]
        ports = tuple(
            (port.get("name"), port.get("containerPort"), port.get("protocol", "TCP"))
            for container in containers(spec)
            for port in container.get("ports") or []
        )
        found.append(
            Pod(pod_party(namespace, component), namespace, labels, ports, bool(spec.get("hostNetwork")),
                describe(manifest))
        )  # fmt: skip
    return found


def pod_party(namespace, component):
    return f"{namespace}/{component}"


def _port_number(pod, port, protocol="TCP"):
    """A container port of ``pod`` by number or name, as its number (None if the pod declares no such port)."""
    for name, number, proto in pod.ports:
        if proto == protocol and (port == number or (isinstance(port, str) and port == name)):
            return number
    return None


def _selector_problems(manifests, stack):
    problems = []
    for manifest in manifests:
        kind, namespace = manifest.get("kind"), manifest["metadata"].get("namespace")
        spec = manifest.get("spec", {})
        local = [pod for pod in stack if pod.namespace == namespace]
        if kind == "Service" and spec.get("selector"):
            chosen = [pod for pod in local if selects(spec["selector"], pod.labels)]
            if not chosen:
                problems.append(f"{describe(manifest)}: its selector {spec['selector']} matches no pod of the stack.")
                continue
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                protocol = port.get("protocol", "TCP")
                if not all(_port_number(pod, target, protocol) for pod in chosen):
                    problems.append(
                        f"{describe(manifest)}: port {port.get('name') or port.get('port')} targets {target!r}, "
                        f"which the selected pods ({', '.join(sorted({p.workload for p in chosen}))}) do not "
                        "declare as a container port. Take both from deploy.k8s.names.service()."
                    )
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "PodDisruptionBudget"}:
            match = spec.get("selector", {}).get("matchLabels", {})
            if match and not any(selects(match, pod.labels) for pod in local):
                problems.append(f"{describe(manifest)}: its selector {match} matches no pod of the stack.")
        if kind != "NetworkPolicy":
            continue
        if not any(label_selector_matches(spec.get("podSelector"), pod.labels) for pod in local):
            problems.append(
                f"{describe(manifest)}: its podSelector {spec.get('podSelector')} matches no pod of the stack."
            )
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction) or []:
                for peer in rule.get(key) or []:
                    if "namespaceSelector" in peer or "podSelector" not in peer:
                        continue
                    if not any(label_selector_matches(peer["podSelector"], pod.labels) for pod in local):
                        problems.append(
                            f"{describe(manifest)}: {direction} peer {peer['podSelector'].get('matchLabels', {})} "
                            "matches no pod of the stack."
                        )
    return problems


# --- reachability -----------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Flow:
    """One allowed (or needed) connection: who opens it, to whom, on which port and protocol."""

    source: str
    destination: str
    port: str  # "5432/TCP", "any/UDP", "any"

    def __str__(self):
        return f"{self.source} → {self.destination} on {self.port}"


def _rendered_namespaces(manifests, stack):
    namespaces = {pod.namespace: {NAMESPACE_LABEL: pod.namespace} for pod in stack}
    for manifest in manifests:
        if manifest.get("kind") == "Namespace":
            name = manifest["metadata"]["name"]
            namespaces[name] = {**(manifest["metadata"].get("labels") or {}), NAMESPACE_LABEL: name}
    return namespaces


def _describe_selector(selector):
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        parts.append(f"{expression.get('key')} {expression.get('operator')} {expression.get('values') or ''}".strip())
    return ",".join(parts)


def peer_party(peer):
    """The name of a NetworkPolicy peer outside the rendered pods: its CIDR, or its selectors."""
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        return block["cidr"] + (f" except {','.join(block['except'])}" if block.get("except") else "")
    ns_selector = peer.get("namespaceSelector")
    pinned = (ns_selector or {}).get("matchLabels", {}).get(NAMESPACE_LABEL)
    if pinned and len(ns_selector) == 1 and len(ns_selector["matchLabels"]) == 1:
        where = pinned
    else:
        where = f"namespaces{{{_describe_selector(ns_selector)}}}"
    return f"{where}/{{{_describe_selector(peer.get('podSelector')) or 'every pod'}}}"


def _peer_targets(peer, policy_namespace, stack, namespaces):
    """(rendered pods the peer selects, the outside party it also selects or None)."""
    if "ipBlock" in peer:
        return [], peer_party(peer)
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        chosen_namespaces, outside = {policy_namespace}, False
    else:
        chosen_namespaces = {name for name, labels in namespaces.items() if label_selector_matches(ns_selector, labels)}
        pinned = (ns_selector.get("matchLabels") or {}).get(NAMESPACE_LABEL)
        outside = not (pinned and pinned in namespaces)
    chosen = [
        pod
        for pod in stack
        if pod.namespace in chosen_namespaces and label_selector_matches(peer.get("podSelector"), pod.labels)
    ]
    return chosen, (peer_party(peer) if outside else None)


@dataclass
class _Rule:
    pods: list
    outside: list
    everything: bool
    ports: list  # [(protocol or None, port number/name or None, end port or None)]; [] = every port
    policy: str


def _rules(stack, manifests, namespaces, direction):
    """{pod party: [rules]} of the pods a policy isolates in ``direction``; pods absent are not isolated."""
    key = "from" if direction == "Ingress" else "to"
    rules = {}
    for policy in (m for m in manifests if m.get("kind") == "NetworkPolicy"):
        spec, namespace = policy.get("spec", {}), policy["metadata"].get("namespace")
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
        if direction not in types:
            continue
        selected = [
            pod
            for pod in stack
            if pod.namespace == namespace and not pod.host_network
            and label_selector_matches(spec.get("podSelector"), pod.labels)
        ]  # fmt: skip
        for pod in selected:
            rules.setdefault(pod.party, [])
        for rule in spec.get(direction.lower()) or []:
            peers = rule.get(key)
            ports = [(p.get("protocol", "TCP"), p.get("port"), p.get("endPort")) for p in rule.get("ports") or []]
            found = _Rule([], [], not peers, ports, describe(policy))
            for peer in peers or []:
                chosen, outside = _peer_targets(peer, namespace, stack, namespaces)
                found.pods.extend(pod for pod in chosen if not pod.host_network)
                if outside:
                    found.outside.append(outside)
            for pod in selected:
                rules[pod.party].append(found)
    return rules


def _port_items(rule_ports, destination):
    """The (protocol, low, high) ranges a rule's ports allow to ``destination`` (a Pod, or None outside)."""
    if not rule_ports:
        return {(None, None, None)}
    items = set()
    for protocol, port, end in rule_ports:
        if isinstance(port, str):
            number = _port_number(destination, port, protocol) if destination else None
            if number is None and destination is not None:
                continue  # a named port the destination does not declare allows nothing there
            items.add((protocol, number if number is not None else port, number if number is not None else port))
        else:
            items.add((protocol, port, end or port))
    return items


def _intersect(first, second):
    both = set()
    for p1, lo1, hi1 in first:
        for p2, lo2, hi2 in second:
            if p1 is not None and p2 is not None and p1 != p2:
                continue
            protocol = p1 or p2
            if lo1 is None:
                both.add((protocol, lo2, hi2))
            elif lo2 is None:
                both.add((protocol, lo1, hi1))
            elif isinstance(lo1, str) or isinstance(lo2, str):
                if lo1 == lo2:
                    both.add((protocol, lo1, hi1))
            elif max(lo1, lo2) <= min(hi1, hi2):
                both.add((protocol, max(lo1, lo2), min(hi1, hi2)))
    return both


def _port_text(protocol, low, high):
    port = "any" if low is None else (str(low) if low == high else f"{low}-{high}")
    return port if protocol is None and low is None else f"{port}/{protocol or 'any'}"


def reachability(manifests):
    """{Flow: [policies that allow it]}: who may open a connection to whom, per the NetworkPolicies."""
    stack = [pod for pod in stack_pods(manifests) if not pod.host_network]
    namespaces = _rendered_namespaces(manifests, stack)
    egress = _rules(stack, manifests, namespaces, "Egress")
    ingress = _rules(stack, manifests, namespaces, "Ingress")
    unrestricted = [_Rule([], [ANYTHING], True, [], UNISOLATED)]
    flows = {}

    def add(source, destination, items, policies):
        for item in items:
            flows.setdefault(Flow(source, destination, _port_text(*item)), set()).update(policies)

    for source in stack:
        out_rules = egress.get(source.party, unrestricted)
        for destination in stack:
            in_rules = ingress.get(destination.party, unrestricted)
            for out_rule in out_rules:
                if not (out_rule.everything or destination in out_rule.pods):
                    continue
                for in_rule in in_rules:
                    if not (in_rule.everything or source in in_rule.pods):
                        continue
                    items = _intersect(
                        _port_items(out_rule.ports, destination), _port_items(in_rule.ports, destination)
                    )
                    add(source.party, destination.party, items, {out_rule.policy, in_rule.policy})
        for out_rule in out_rules:
            for party in out_rule.outside + ([ANYTHING] if out_rule.everything and out_rule.outside == [] else []):
                add(source.party, party, _port_items(out_rule.ports, None), {out_rule.policy})
    for destination in stack:
        for in_rule in ingress.get(destination.party, unrestricted):
            for party in in_rule.outside + ([ANYTHING] if in_rule.everything and in_rule.outside == [] else []):
                add(party, destination.party, _port_items(in_rule.ports, destination), {in_rule.policy})
    # A party that is several pods (the same component twice) collapses; so do duplicates of "anything".
    return {flow: sorted(policies - {UNISOLATED}) or [UNISOLATED]
            for flow, policies in flows.items()}  # fmt: skip


# --- the flows the stack needs -------------------------------------------------------


@dataclass(frozen=True)
class Need:
    flow: Flow
    why: str


def _notification_ports(config, manifests):
    """The ports Alertmanager's receivers dial, as the render declared them on its configuration Secret (the
    URLs that say them are secret); without the annotation (a project's own template), the settings' ports."""
    for manifest in manifests:
        if manifest.get("kind") == "Secret" and manifest["metadata"]["name"] == "alertmanager-config":
            declared = (manifest["metadata"].get("annotations") or {}).get(observability.NOTIFICATION_PORTS_ANNOTATION)
            if declared is not None:
                return sorted({int(port) for port in str(declared).split(",") if port.strip().isdigit()})
    return observability.notification_ports(observability.alertmanager_config(config, DeploySecrets(), redact=True))


def needed_flows(config, manifests):
    """The flows the stack uses, from the configuration (and, for the load balancer, the exposed Services).

    This is the one place that says who talks to whom: a new component, or a
    new connection between two, is declared here, and the NetworkPolicies
    must then allow it, and nothing else.
    """
    ns, monitoring_ns, logging_ns = config.namespace, config.monitoring_namespace, config.logging_namespace
    vpc = peer_party({"ipBlock": {"cidr": config.vpc_cidr}})
    dns = peer_party(DNS_PEER)
    needs = []

    def need(why, source, destination, port, protocol="TCP"):
        needs.append(Need(Flow(source, destination, f"{port}/{protocol}"), why))

    def pod(namespace, component):
        return pod_party(namespace, component)

    def data_service(component):
        """The party and port of PostgreSQL or Redis: the in-cluster pods, or the external CIDR."""
        found = names.endpoint(config, component)
        if found.in_cluster:
            return pod(ns, found.selects), found.target_port
        return peer_party({"ipBlock": {"cidr": getattr(config, f"{component}_cidr")}}), found.port

    app = pod(ns, "app")
    migrate = pod(ns, "migrate")
    postgres, postgres_port = data_service("postgres")
    redis, redis_port = data_service("redis")
    in_app_ns = [app, migrate]
    need("the app queries PostgreSQL", app, postgres, postgres_port)
    need("the app caches in Redis", app, redis, redis_port)
    need("the migration Job migrates PostgreSQL", migrate, postgres, postgres_port)
    if config.postgres_in_cluster or config.postgres_operator:
        backup = pod(ns, "postgres-backup")
        in_app_ns += [postgres, backup]
        need("the nightly backup dumps PostgreSQL", backup, postgres, postgres_port)
        if config.postgres_backup_bucket:
            need("the backup streams its dump to S3", backup, peer_party({"ipBlock": {"cidr": "0.0.0.0/0"}}), 443)
            agent = peer_party({"ipBlock": {"cidr": backup_commands.POD_IDENTITY_AGENT}})
            need("the backup's AWS SDK gets credentials from the EKS Pod Identity agent", backup, agent,
                 backup_commands.POD_IDENTITY_PORT)  # fmt: skip
    if config.postgres_operator:
        # CloudNativePG's instances (one party: the primary moves between them) and its operator.
        operator = peer_party(
            {
                "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: config.postgres_operator_namespace}},
                "podSelector": {"matchLabels": cnpg.OPERATOR_POD_LABELS},
            }
        )
        need("the replicas stream the primary's WAL (and a new one copies it)", postgres, postgres, cnpg.POSTGRES_PORT)
        need("the instances ask each other's status before a failover", postgres, postgres, cnpg.STATUS_PORT)
        need("the CloudNativePG operator reads each instance's status", operator, postgres, cnpg.STATUS_PORT)
        need("each instance manager watches its Cluster and holds the primary's lease in the Kubernetes API",
             postgres, vpc, KUBE_APISERVER_PORT)  # fmt: skip
        if config.postgres_backup_bucket:
            need("the Barman Cloud sidecar archives each WAL segment and base backup to S3", postgres,
                 peer_party({"ipBlock": {"cidr": "0.0.0.0/0"}}), 443)  # fmt: skip
            need("the Barman Cloud sidecar gets the Cluster's credentials from the EKS Pod Identity agent", postgres,
                 peer_party({"ipBlock": {"cidr": backup_commands.POD_IDENTITY_AGENT}}),
                 backup_commands.POD_IDENTITY_PORT)  # fmt: skip
    if config.redis_in_cluster:
        in_app_ns.append(redis)
    cutover = pod(ns, "cutover")
    if any(found.party == cutover for found in stack_pods(manifests)):
        # Only while k8s_deploy --cutover renders its Job (app/_cutover-job.yaml) with its policies.
        need("the cut-over Job copies the SQLite file into PostgreSQL", cutover, postgres, postgres_port)
        need(
            "the cut-over Job reads the SQLite file from S3",
            cutover,
            peer_party({"ipBlock": {"cidr": "0.0.0.0/0"}}),
            443,
        )
        need("the cut-over Job takes its AWS identity from EKS Pod Identity's agent", cutover,
             peer_party({"ipBlock": {"cidr": "169.254.170.23/32"}}), 80)  # fmt: skip
    for port in _exposed_ports(manifests, config):
        need("the load balancer sends requests to the app", vpc, app, port)

    everyone = list(in_app_ns)
    if config.monitoring:
        app_port = names.service(config, "app").target_port
        if config.monitoring_mode == "standalone":
            prometheus = pod(monitoring_ns, "prometheus")
            kube_state_metrics = pod(monitoring_ns, "kube-state-metrics")
            everyone += [prometheus, kube_state_metrics]
            need("Prometheus scrapes kube-state-metrics", prometheus, kube_state_metrics,
                 names.service(config, "kube-state-metrics").target_port)  # fmt: skip
            need("Prometheus scrapes node-exporter (on the node's network)", prometheus, vpc,
                 names.service(config, "node-exporter").target_port)  # fmt: skip
            need("Prometheus scrapes the kubelets and cAdvisor", prometheus, vpc, KUBELET_PORT)
            need("Prometheus discovers its targets in the Kubernetes API", prometheus, vpc, KUBE_APISERVER_PORT)
            need("kube-state-metrics reads the Kubernetes API", kube_state_metrics, vpc, KUBE_APISERVER_PORT)
            alertmanager, grafana = pod(monitoring_ns, "alertmanager"), pod(monitoring_ns, "grafana")
            everyone += [alertmanager, grafana]
            need("Prometheus sends its alerts to Alertmanager", prometheus, alertmanager,
                 names.service(config, "alertmanager").target_port)  # fmt: skip
            need("Grafana queries Prometheus", grafana, prometheus, names.service(config, "prometheus").target_port)
            anywhere = peer_party({"ipBlock": {"cidr": "0.0.0.0/0"}})
            for port in _notification_ports(config, manifests):
                need("Alertmanager notifies the receivers (SMTP, webhook, SNS)", alertmanager, anywhere, port)
        else:
            # The Prometheus Operator's own Prometheus, outside this render.
            prometheus = peer_party(
                {
                    "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: monitoring_ns}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            )
        need("Prometheus scrapes the app's /metrics", prometheus, app, app_port)
    if config.logging:
        elasticsearch, kibana = pod(logging_ns, "elasticsearch"), pod(logging_ns, "kibana")
        fluentd, setup = pod(logging_ns, "fluentd"), pod(logging_ns, "efk-setup")
        everyone += [elasticsearch, kibana, fluentd, setup]
        es_port = names.service(config, "elasticsearch").target_port
        need("Fluentd ships the logs to Elasticsearch", fluentd, elasticsearch, es_port)
        need("Fluentd reads pod metadata from the Kubernetes API", fluentd, vpc, KUBE_APISERVER_PORT)
        need("Kibana reads Elasticsearch", kibana, elasticsearch, es_port)
        need("the setup Job creates the retention policy and index template", setup, elasticsearch, es_port)
        need("the setup Job creates the data view and saved search", setup, kibana,
             names.service(config, "kibana").target_port)  # fmt: skip
        if config.elasticsearch_replicas > 1:
            need("Elasticsearch nodes form a cluster", elasticsearch, elasticsearch,
                 names.service(config, "elasticsearch-nodes").target_port)  # fmt: skip
    # Every pod of the render, a project's own included (allow-dns covers each namespace as a whole).
    everyone += [pod.party for pod in stack_pods(manifests) if not pod.host_network]
    for party in dict.fromkeys(everyone):
        need("every pod resolves names", party, dns, 53, "UDP")
        need("every pod resolves names", party, dns, 53, "TCP")
    for declared in config.extra_flows:
        flow, port = declared.rsplit(" ", 1)
        source, destination = flow.split(" -> ")
        needs.append(Need(Flow(source, destination, port), "declared in DEPLOY['extra_flows']"))
    return needs


def _exposed_ports(manifests, config):
    """Container ports of the app that a load balancer reaches, whatever the exposure mode.

    A Service of type LoadBalancer or NodePort, or one an Ingress sends to, is
    exposed; its ``targetPort`` resolved on the app's pods is what the balancer
    (in the VPC) connects to.
    """
    services = _services(manifests)
    exposed = [m for m in services.values() if m["spec"].get("type") in {"LoadBalancer", "NodePort"}]
    for ingress in (m for m in manifests if m.get("kind") == "Ingress"):
        namespace = ingress["metadata"].get("namespace")
        for backend in _ingress_backends(ingress):
            service = services.get((namespace, backend.get("name")))
            if service is not None and service not in exposed:
                exposed.append(service)
    app_pods = [p for p in stack_pods(manifests) if p.party == pod_party(config.namespace, "app")]
    ports = set()
    for service in exposed:
        for port in service["spec"].get("ports") or []:
            for pod in app_pods:
                if selects(service["spec"].get("selector") or {}, pod.labels):
                    number = _port_number(pod, port.get("targetPort", port.get("port")), port.get("protocol", "TCP"))
                    if number:
                        ports.add(number)
    return sorted(ports)


def _flow_problems(manifests, config):
    allowed = reachability(manifests)
    needed = {}
    for item in needed_flows(config, manifests):
        needed.setdefault(item.flow, item.why)
    problems = [
        f"The NetworkPolicies do not allow {flow}, which the stack needs ({why}). Allow it in the "
        "NetworkPolicy templates of both ends."
        for flow, why in sorted(needed.items())
        if flow not in allowed
    ]
    problems += [
        f"The NetworkPolicies allow {flow}, which the stack does not need (allowed by {', '.join(policies)}). "
        "Remove the allow, or declare the flow (DEPLOY['extra_flows'] for a project's own templates)."
        for flow, policies in sorted(allowed.items())
        if flow not in needed
    ]
    return problems


# --- the rule ---------------------------------------------------------------------


def wiring_problems(manifests, config):
    """Every way the rendered objects fail to work together, as sentences naming the object and the fix."""
    stack = stack_pods(manifests)
    problems = _reference_problems(manifests, config)
    problems += _selector_problems(manifests, stack)
    problems += _scrape_problems(manifests, stack)
    problems += _flow_problems(manifests, config)
    return problems


def matrix(config, manifests):
    """Rows of the reachability matrix for the docs: (flow, why, policies)."""
    allowed = reachability(manifests)
    whys = {}
    for item in needed_flows(config, manifests):
        whys.setdefault(item.flow, item.why)
    return [(flow, whys.get(flow, "NOT NEEDED"), policies) for flow, policies in sorted(allowed.items())]
