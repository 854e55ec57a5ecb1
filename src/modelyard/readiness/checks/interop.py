"""Interoperability: standard protocols, and signatures other tools can read."""

from __future__ import annotations

from modelyard.readiness.checks import references as ref
from modelyard.readiness.checks.base import (
    Check,
    Finding,
    not_applicable,
    passed,
    plural,
    warned,
)
from modelyard.readiness.evidence import EndpointFacts, Evidence


def protocols(ev: Evidence) -> Finding:
    rest = "Open Inference Protocol v2 over HTTP (/v2/models/NAME/infer) and JSON predict"
    if ev.yard.grpc_port:
        return passed(f"{rest}; OIP v2 over gRPC on port {ev.yard.grpc_port} (KServe and "
                      "Triton clients)")
    return warned(f"{rest}; gRPC is off, so gRPC clients (tritonclient.grpc, KServe) cannot "
                  "connect", "set grpc_port (modelyard serve --grpc-port 8001; the grpc "
                  "extra)")


def signature_export(_: Evidence, ep: EndpointFacts) -> Finding:
    if not ep.versions:
        return not_applicable("no version is served yet")
    loose = [f"{v.ref}:{s.name} {list(s.shape)}" for v in ep.versions
             for s in (*v.signature.inputs, *v.signature.outputs) if -1 in s.shape[1:]]
    if loose:
        return warned(f"free dimensions beyond the batch one: {', '.join(loose[:4])}: the "
                      "exported metadata cannot tell clients the tensor size",
                      "declare the signature with fixed sizes except the first (batch) "
                      "dimension")
    count = sum(len(v.signature.inputs) + len(v.signature.outputs) for v in ep.versions)
    return passed(f"{plural(count, 'tensor')} with OIP datatypes and fixed shapes (batch "
                  "dimension free), exported as model metadata at GET /v2/models/NAME")


CHECKS = (
    Check("interop.protocols", "interoperability", "Standard protocols exposed", 1, ref.OIP,
          "serve OIP v2 over gRPC too", "the server's protocols (HTTP always; gRPC when "
          "grpc_port is set)", yard=protocols),
    Check("interop.signature_export", "interoperability", "Signatures exportable", 1,
          f"{ref.OIP}, model metadata", "fix tensor shapes in the signature",
          "served versions' tensor shapes (only the batch dimension free)",
          endpoint=signature_export),
)
