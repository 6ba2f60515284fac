"""How users reach the app, and what Django must believe about HTTPS: one home for both.

The load balancer and Django's redirect settings must agree, or HTTPS loops
(a layer-4 balancer adds no ``X-Forwarded-Proto``, so a redirecting Django
sends every HTTPS request to HTTPS again) or redirects to a port nothing
serves. Each mode below says what the balancer does and which environment
the app gets; the Service, the Ingress, the container ports, the
NetworkPolicy and the ConfigMap all read it from here.

``alb``
    An Application Load Balancer (Ingress) ends TLS with the ACM
    certificate, redirects plain HTTP to HTTPS itself (one redirect), and
    sends ``X-Forwarded-Proto``, which Django and gunicorn trust.
``nlb`` with a certificate
    A Network Load Balancer ends TLS on 443 and adds no header, so the
    scheme is told by the port: 443 goes to the pod's ``tls-offload`` port
    (8443) and 80 to ``http`` (8000). Django trusts ``SERVER_PORT`` (the
    port gunicorn accepted on, which a client cannot forge) and redirects
    what came to 8000 to HTTPS, once.
``nlb`` without a certificate
    No HTTPS exists: the site is served over plain HTTP on 80, and Django
    neither redirects (there is nothing to redirect to) nor marks cookies
    ``Secure`` (a browser would not send them back). Set
    ``DEPLOY['certificate_arn']`` for production.
"""

from dataclasses import dataclass

HTTP_PORT = 8000
TLS_OFFLOAD_PORT = 8443
FORWARDED_PROTO = "HTTP_X_FORWARDED_PROTO=https"


@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    service_port: int  # the balancer's listener that sends here
    service_port_name: str


@dataclass(frozen=True)
class Exposure:
    mode: str  # "alb", "nlb-tls" or "nlb-http"
    https: bool
    ports: tuple  # ContainerPort, in listener order
    trusted_https_marker: str  # SECURE_PROXY_SSL_HEADER as META_KEY=value, or "" for none
    django_redirects: bool

    def app_env(self):
        """The app's environment that follows from this exposure: the same keys in every mode."""
        flag = "true" if self.https else "false"
        return {
            "GUNICORN_BIND": ",".join(f"0.0.0.0:{p.port}" for p in self.ports),
            "SECURE_PROXY_SSL_HEADER": self.trusted_https_marker,
            "SECURE_SSL_REDIRECT": "true" if self.django_redirects else "false",
            "SESSION_COOKIE_SECURE": flag,
            "CSRF_COOKIE_SECURE": flag,
            "SECURE_HSTS_SECONDS": "31536000" if self.https else "0",
        }


def exposure(config):
    """The :class:`Exposure` of ``config``."""
    http = ContainerPort("http", HTTP_PORT, 80, "http")
    if config.exposure == "alb":
        # The ALB redirects HTTP itself; Django's redirect is a second line that HTTP never reaches.
        return Exposure("alb", True, (http,), FORWARDED_PROTO, django_redirects=True)
    if config.certificate_arn:
        offload = ContainerPort("tls-offload", TLS_OFFLOAD_PORT, 443, "https")
        return Exposure("nlb-tls", True, (http, offload), f"SERVER_PORT={TLS_OFFLOAD_PORT}", django_redirects=True)
    return Exposure("nlb-http", False, (http,), "", django_redirects=False)


def warnings(config):
    """Sentences for the operator about what ``config`` exposes; empty when nothing needs saying."""
    if config.exposure == "nlb" and not config.certificate_arn and config.load_balancer_scheme == "internet-facing":
        return [
            "The site is served to the internet over plain HTTP (DEPLOY['exposure'] 'nlb' without "
            "DEPLOY['certificate_arn']): admin passwords and session cookies cross the internet unencrypted. "
            "Set DEPLOY_CERTIFICATE_ARN (an ACM certificate) for production, or use a load_balancer_scheme of "
            "'internal'."
        ]
    return []
