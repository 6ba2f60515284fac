"""Answers the kubelet's probes and Prometheus's scrapes whatever the Host.

Both arrive with the pod IP as the Host header, which ``ALLOWED_HOSTS``
rightly rejects. This middleware sits first and calls the probe views directly
for these exact paths, before any code calls ``request.get_host()``; every
other path keeps the ``ALLOWED_HOSTS`` protection.
"""

from django_prometheus import exports

from deploy.health import views

PROBE_VIEWS = {
    "/healthz": views.healthz,
    "/readyz": views.readyz,
    "/startupz": views.startupz,
    "/metrics": exports.ExportToDjangoView,
}


class ProbeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        view = PROBE_VIEWS.get(request.path_info)
        if view is not None and request.method in ("GET", "HEAD"):
            return view(request)
        return self.get_response(request)
