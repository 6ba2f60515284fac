"""HTTPS behind each rendered load balancer: a real haproxy in front of a real gunicorn.

haproxy plays the balancer as the rendered manifests configure it: the ALB
(Ingress) ends TLS, redirects HTTP itself and sends X-Forwarded-Proto; the
NLB (LoadBalancer Service) is layer 4: TLS ended on the port the
ssl-ports annotation names, no header added, each Service port sent to the
container port its targetPort names. The app runs with the environment the
render gives it (its ConfigMap), on free ports of 127.0.0.1 instead of the
pod's 8000 and 8443.
"""

import http.client
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from deploy.k8s.render import render_manifests
from tests.conftest import free_port, run_gunicorn, target_database_url
from tests.k8s_helpers import by_kind, mode_config

HOST = "app.example.com"
CERT_ARN = "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123"
MODES = {
    "alb": {"exposure": "alb", "certificate_arn": CERT_ARN},
    "nlb-tls": {"certificate_arn": CERT_ARN},
    "nlb-http": {},
}

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # One worker runs them all, so that each mode's stack starts once.
    pytest.mark.xdist_group("https_exposure"),
    pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed (.ci/run installs it)"),
]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for app.example.com, made for this run."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=DNS:{HOST}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    bundle = folder / "bundle.pem"
    bundle.write_text(cert.read_text() + key.read_text())
    return bundle, cert


class Balancer:
    """What the render says the balancer does, with the listener ports mapped to free local ones."""

    def __init__(self, manifests):
        (self.configmap,) = by_kind(manifests, "ConfigMap", "django-app")
        (service,) = by_kind(manifests, "Service", "django-app")
        (deployment,) = by_kind(manifests, "Deployment", "django-app")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.ingress = by_kind(manifests, "Ingress")
        annotations = service["metadata"].get("annotations", {})
        tls_port_names = annotations.get("service.beta.kubernetes.io/aws-load-balancer-ssl-ports", "").split(",")
        # listener port -> (TLS ended here?, container port)
        self.listeners = {}
        if self.ingress:
            alb = self.ingress[0]["metadata"]["annotations"]
            assert alb["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
            target = container_ports[
                self.ingress[0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"]
            ]
            self.listeners = {80: (False, target), 443: (True, target)}
        else:
            for port in service["spec"]["ports"]:
                self.listeners[port["port"]] = (port["name"] in tls_port_names, container_ports[port["targetPort"]])
        self.local = {port: free_port() for port in {*self.listeners, *(c for _, c in self.listeners.values())}}

    def app_env(self):
        """The ConfigMap's environment, with the pod's ports replaced by this test's."""
        env = dict(self.configmap["data"])
        for pod_port in {c for _, c in self.listeners.values()}:
            env["GUNICORN_BIND"] = env["GUNICORN_BIND"].replace(
                f"0.0.0.0:{pod_port}", f"127.0.0.1:{self.local[pod_port]}"
            )
            env["SECURE_PROXY_SSL_HEADER"] = env["SECURE_PROXY_SSL_HEADER"].replace(
                f"={pod_port}", f"={self.local[pod_port]}"
            )
        keys = ("GUNICORN_BIND", "SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE")
        return {key: env[key] for key in (*keys, "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS")}

    def haproxy_config(self, bundle):
        lines = ["global", "  maxconn 100", "defaults", "  timeout connect 5s", "  timeout client 30s",
                 "  timeout server 30s"]  # fmt: skip
        for listener, (tls, pod_port) in sorted(self.listeners.items()):
            ssl_part = f" ssl crt {bundle}" if tls else ""
            lines += [f"frontend l{listener}", f"  bind 127.0.0.1:{self.local[listener]}{ssl_part}"]
            if self.ingress:  # layer 7, as the ALB
                lines += ["  mode http", "  option forwardfor"]
                if tls:
                    lines += [
                        "  http-request set-header X-Forwarded-Proto https",
                        "  http-request set-header X-Forwarded-Port 443",
                    ]
                else:
                    lines += ["  http-request redirect scheme https code 301"]
            else:  # layer 4, as the NLB
                lines += ["  mode tcp"]
            mode = "http" if self.ingress else "tcp"
            lines += [f"  default_backend b{listener}", f"backend b{listener}", f"  mode {mode}",
                      f"  server app 127.0.0.1:{self.local[pod_port]}"]  # fmt: skip
        return "\n".join(lines) + "\n"


def _wait_for(port):
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to app.example.com (SNI and certificate check), connected to 127.0.0.1."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch(balancer, listener, path, cafile, headers=None):
    """GET ``path`` from the balancer's ``listener`` (80 or 443) as a browser would for app.example.com."""
    port = balancer.local[listener]
    if balancer.listeners[listener][0]:
        connection = _PinnedHTTPS(HOST, port, context=ssl.create_default_context(cafile=str(cafile)), timeout=10)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers={"Host": HOST, **(headers or {})})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, response.headers, body


@pytest.fixture(scope="module", params=sorted(MODES))
def stack(request, tmp_path_factory, static_root, django_db_setup, django_db_blocker, certificate):
    """One gunicorn and haproxy per mode, shared by the mode's tests (which only send GETs)."""
    mode = request.param
    balancer = Balancer(render_manifests(mode_config("default", **MODES[mode])))
    bundle, cert = certificate
    folder = tmp_path_factory.mktemp(f"https-{mode}")
    config_file = folder / "haproxy.cfg"
    config_file.write_text(balancer.haproxy_config(bundle))
    app_env = {"DATABASE_URL": target_database_url(), "STATIC_ROOT": static_root, **balancer.app_env()}
    with django_db_blocker.unblock(), run_gunicorn(folder, workers=1, **app_env):
        proxy = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            for listener in balancer.listeners:
                _wait_for(balancer.local[listener])
            yield mode, balancer, cert
        finally:
            proxy.terminate()
            proxy.wait(timeout=10)


def test_https_gets_the_page_never_a_redirect_to_itself(stack):
    mode, balancer, cert = stack
    tls = [listener for listener, (ends_tls, _) in balancer.listeners.items() if ends_tls]
    if mode == "nlb-http":
        assert tls == [], "without a certificate no listener claims HTTPS"
        return
    assert tls == [443]
    for path in ("/", "/products/", "/admin/login/"):
        status, headers, _ = fetch(balancer, 443, path, cert)
        assert status == 200, (mode, path, status, headers.get("Location"))
        assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    status, headers, _ = fetch(balancer, 443, "/admin/login/", cert)
    assert "Secure" in headers["Set-Cookie"], "the CSRF cookie is marked Secure over HTTPS"


def test_plain_http_is_redirected_exactly_once(stack):
    mode, balancer, cert = stack
    status, headers, _ = fetch(balancer, 80, "/products/?page=1", cert)
    if mode == "nlb-http":
        # Nothing serves HTTPS: no redirect to a port nothing serves, and cookies a browser sends back over HTTP.
        assert status == 200 and "Location" not in headers
        status, headers, _ = fetch(balancer, 80, "/admin/login/", cert)
        assert status == 200 and "Secure" not in headers["Set-Cookie"]
        assert "Strict-Transport-Security" not in headers
        return
    assert status == 301, (mode, status)
    assert headers["Location"] == f"https://{HOST}/products/?page=1"
    status, headers, _ = fetch(balancer, 443, "/products/?page=1", cert)
    assert status == 200, ("the redirect's target answers, not another redirect", status, headers.get("Location"))
    if mode == "nlb-tls":
        # HTTPS is told by the port: a client's X-Forwarded-Proto on port 80 does not skip the redirect.
        status, headers, _ = fetch(balancer, 80, "/", cert, headers={"X-Forwarded-Proto": "https"})
        assert status == 301 and headers["Location"] == f"https://{HOST}/"


def test_probes_answer_plain_http_on_the_pod_port(stack):
    """The kubelet and Prometheus speak HTTP to port 8000 directly: no redirect for them, in every mode."""
    mode, balancer, _ = stack
    pod_http = balancer.local[8000]
    for path in ("/healthz", "/readyz", "/metrics"):
        connection = http.client.HTTPConnection("127.0.0.1", pod_http, timeout=10)
        connection.request("GET", path, headers={"Host": "10.0.3.7:8000"})
        assert connection.getresponse().status == 200, (mode, path)
        connection.close()
