"""kubefake: an in-process Kubernetes API server faithful enough to prove bluegreen's Kubernetes target.

    fake = FakeKube()
    client = fake.client()                       # a lightkube Client served through fake.transport()
    fake.fail_image("app:broken*", "CrashLoopBackOff")
    fake.inject("PATCH", r"/services/app$", status=503)
"""

from .server import SERVER, Fault, FakeKube, FakeTransport, Request
from .validation import SchemaError, validate, validate_manifest

__all__ = ["SERVER", "Fault", "FakeKube", "FakeTransport", "Request", "SchemaError", "validate", "validate_manifest"]
