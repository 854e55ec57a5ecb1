"""Traces through the real server: a span per inference request (continuing the caller's
traceparent), per graph node and per executed batch (linked to the requests it served); and
export over OTLP/HTTP to a collector listening on 127.0.0.1."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sklearn.linear_model import LogisticRegression

from modelyard import Graph, Yard
from modelyard.domain.errors import ValidationFailed
from modelyard.serving.app import create_app
from modelyard.serving.server import BackgroundServer, free_port
from modelyard.settings import Settings
from modelyard.telemetry import tracing
from modelyard.telemetry.tracing import Tracing

ROWS = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'yard' / 'yard.db'}"


@pytest.fixture
def served(yard: Yard, tabular: Any) -> Yard:
    """A plain model endpoint that batches, and a graph of two model nodes."""
    x, label, _ = tabular
    yard.register("clf", LogisticRegression().fit(x, label), to_onnx=True, sample=x[:4])
    yard.register("sleepy", "modelyard.testing.models:Sleepy", flavor="python", trusted=True,
                  sample=x[:2])
    yard.create_endpoint("clf", "clf:1", auth="public")
    yard.create_endpoint("sleepy", "sleepy:1", auth="public",
                         deployment={"max_batch_size": 16, "max_queue_delay_ms": 20})
    graph = (Graph("pair").input("features", "float32", (-1, 4))
             .model("first", "clf:1", inputs={"input": "inputs.features"})
             .model("second", "sleepy:1", inputs={"input": "inputs.features"})
             .output("label", "first.label").output("total", "second.output"))
    yard.create_endpoint("pair", graph=graph, auth="public")
    return yard


@contextlib.contextmanager
def server_with_tracing(yard: Yard, traced: Tracing) -> Iterator[str]:
    """The real app, with these spans' destination, under uvicorn on a random port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(yard, tracing=traced), host="127.0.0.1",
                                           port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def wait_for(exporter: InMemorySpanExporter, name: str, count: int = 1
             ) -> list[ReadableSpan]:
    """Batch spans end on the model thread after the answer left: wait for them."""
    deadline = time.monotonic() + 10
    while True:
        spans = [s for s in exporter.get_finished_spans() if s.name == name]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.02)


def body(rows: np.ndarray = ROWS) -> dict[str, Any]:
    return {"inputs": {"features": rows.tolist()}}


def test_request_node_and_batch_spans_form_one_trace(served: Yard) -> None:
    exporter = InMemorySpanExporter()
    with server_with_tracing(served, Tracing(exporter, batch=False)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/endpoints/pair/predict", json=body(), headers={
            "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "x-request-id": "trace-me"})
        assert answer.status_code == 200, answer.text
        batches = wait_for(exporter, "batch sleepy:1") + wait_for(exporter, "batch clf:1")
    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.name == "predict pair")
    # the caller's trace continues: same trace id, its span as our parent
    assert request.kind == SpanKind.SERVER
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert request.parent is not None and format(request.parent.span_id, "016x") == PARENT_ID
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["modelyard.request_id"] == "trace-me"
    assert request.attributes["modelyard.version"] == answer.headers["modelyard-model-version"]
    nodes = {s.name: s for s in spans if s.name.startswith("node ")}
    assert set(nodes) == {"node first", "node second"}
    for name, node in nodes.items():
        assert node.parent is not None and node.parent.span_id == request.context.span_id
        assert node.context.trace_id == request.context.trace_id
        assert node.attributes["modelyard.rows"] == len(ROWS), name
    assert nodes["node second"].attributes["modelyard.model.version"] == "sleepy:1"
    # each node's batch: in the same trace, linked to the node call it served
    assert len(batches) == 2
    for batch in batches:
        node = nodes["node first" if batch.name == "batch clf:1" else "node second"]
        assert batch.context.trace_id == request.context.trace_id
        assert [link.context.span_id for link in batch.links] == [node.context.span_id]
        assert batch.attributes["modelyard.batch.rows"] == len(ROWS)


def test_one_batch_span_links_every_request_it_served(served: Yard) -> None:
    exporter = InMemorySpanExporter()
    with server_with_tracing(served, Tracing(exporter, batch=False)) as url:

        def call(i: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=30) as http:
                return http.post("/endpoints/sleepy/predict",
                                 json={"inputs": ROWS[:1].tolist()})

        with ThreadPoolExecutor(8) as pool:  # together: the batcher stacks them
            answers = list(pool.map(call, range(16)))
        assert [a.status_code for a in answers] == [200] * 16
        requests = wait_for(exporter, "predict sleepy", 16)
        deadline = time.monotonic() + 10
        while sum(len(b.links) for b in wait_for(exporter, "batch sleepy:1")) < 16:
            assert time.monotonic() < deadline, "not every request's batch was traced"
            time.sleep(0.02)
    batches = wait_for(exporter, "batch sleepy:1")
    request_spans = {s.context.span_id: s for s in requests}
    linked = [link.context.span_id for b in batches for link in b.links]
    assert sorted(linked) == sorted(request_spans)  # each request in exactly one batch
    shared = max(batches, key=lambda b: len(b.links))
    assert len(shared.links) > 1, "no two requests were batched together"
    assert shared.attributes["modelyard.batch.requests"] == len(shared.links)
    # the batch is in its first request's trace, and reachable from the others by its links
    assert shared.parent is not None and shared.parent.span_id == shared.links[0].context.span_id
    traces = {request_spans[link.context.span_id].context.trace_id for link in shared.links}
    assert len(traces) == len(shared.links)  # independent requests: independent traces


def test_a_failed_request_and_its_node_are_error_spans(served: Yard) -> None:
    exporter = InMemorySpanExporter()
    fragile = (Graph().input("features", "float32", (-1, 4))
               .model("only", "sleepy:1", inputs={"input": "inputs.features"}, timeout_ms=1)
               .output("total", "only.output"))
    served.create_endpoint("fragile", graph=fragile, auth="public")
    with server_with_tracing(served, Tracing(exporter, batch=False)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/endpoints/fragile/predict", json=body())
    assert answer.status_code == 504, answer.text
    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.name == "predict fragile")
    node = next(s for s in spans if s.name == "node only")
    assert request.status.status_code == StatusCode.ERROR
    assert node.status.status_code == StatusCode.ERROR
    assert node.attributes["error.type"] == "node_timeout"


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces receiver: decodes each protobuf export it is sent."""

    received: list[ExportTraceServiceRequest]
    content_types: list[str]

    def do_POST(self) -> None:  # the name http.server calls
        data = self.rfile.read(int(self.headers["content-length"]))
        self.content_types.append(self.headers.get("content-type", ""))
        export = ExportTraceServiceRequest()
        export.ParseFromString(data)
        self.received.append(export)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def collector() -> Iterator[tuple[str, type[Collector]]]:
    handler = type("Receiver", (Collector,), {"received": [], "content_types": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True,
                              kwargs={"poll_interval": 0.05})  # shutdown() in 0.05 s
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def exported(handler: type[Collector]) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, span) of every span the collector received."""
    out = []
    for export in handler.received:
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value
                        for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                out.extend((resource, span) for span in scope_spans.spans)
    return out


def test_spans_are_exported_over_otlp_to_the_configured_collector(served: Yard) -> None:
    with collector() as (endpoint, handler):
        # Only the endpoint is configured: that turns OTLP export on.
        traced = Yard(settings=served.settings.with_(otlp_endpoint=endpoint))
        try:
            with BackgroundServer(traced) as server, \
                    httpx.Client(base_url=server.url, timeout=30) as http:
                for _ in range(3):
                    answer = http.post("/endpoints/clf/predict",
                                       json={"inputs": ROWS.tolist()},
                                       headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
                    assert answer.status_code == 200, answer.text
            # stopping the server flushed the batch processor
        finally:
            traced.close()
        spans = exported(handler)
    assert handler.content_types and set(handler.content_types) == {"application/x-protobuf"}
    names = [span.name for _, span in spans]
    assert names.count("predict clf") == 3 and names.count("batch clf:1") >= 1
    resource, request = next((r, s) for r, s in spans if s.name == "predict clf")
    assert resource["service.name"] == "modelyard"
    assert request.trace_id.hex() == TRACE_ID and request.parent_span_id.hex() == PARENT_ID
    attributes = {a.key: a.value for a in request.attributes}
    assert attributes["modelyard.endpoint"].string_value == "clf"
    assert attributes["http.response.status_code"].int_value == 200


def settings_with(**values: Any) -> Settings:
    return Settings.load("/nonexistent-yard", env={}, **values)


def test_tracing_is_off_unless_configured() -> None:
    assert tracing.from_settings(settings_with()) is None
    assert tracing.from_settings(settings_with(trace_exporter="off",
                                               otlp_endpoint="http://127.0.0.1:4318")) is None
    console = tracing.from_settings(settings_with(trace_exporter="console"))
    assert console is not None and isinstance(console.exporter, ConsoleSpanExporter)
    console.shutdown()
    assert tracing.otlp_traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.otlp_traces_url("https://c.example/otlp/v1/traces") == \
        "https://c.example/otlp/v1/traces"
    for bad in ({"trace_exporter": "zipkin"}, {"trace_sample_ratio": 1.5},
                {"otlp_endpoint": "collector:4318"}):
        with pytest.raises(ValidationFailed):
            tracing.from_settings(settings_with(**bad))


def test_the_sample_ratio_drops_whole_traces(served: Yard) -> None:
    exporter = InMemorySpanExporter()
    with server_with_tracing(served, Tracing(exporter, sample_ratio=0.0, batch=False)) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        assert http.post("/endpoints/pair/predict", json=body()).status_code == 200
        # a sampled caller's trace is kept whatever the ratio (parent-based)
        kept = http.post("/endpoints/pair/predict", json=body(),
                         headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        assert kept.status_code == 200
        wait_for(exporter, "batch sleepy:1")
    spans: Mapping[str, Any] = {s.name: s for s in exporter.get_finished_spans()}
    assert {format(s.context.trace_id, "032x") for s in spans.values()} == {TRACE_ID}
    assert {"predict pair", "node first", "node second", "batch sleepy:1"} <= set(spans)


def test_grpc_calls_are_traced_like_http_ones(served: Yard) -> None:
    grpc = pytest.importorskip("grpc", reason="grpcio not installed (pip install "
                               "'modelyard[grpc]')")
    from modelyard.serving.grpc_v2 import GrpcListen
    from modelyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
    from modelyard.serving.grpc_v2.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    exporter = InMemorySpanExporter()
    grpc_port = free_port()
    port = free_port()
    app = create_app(served, tracing=Tracing(exporter, batch=False),
                     grpc=GrpcListen("127.0.0.1", grpc_port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "no server"
            time.sleep(0.02)
        request = pb.ModelInferRequest(model_name="clf")
        tensor = request.inputs.add(name="input", datatype="FP32", shape=[3, 4])
        tensor.contents.fp32_contents.extend(ROWS.ravel().tolist())
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            _, call = GRPCInferenceServiceStub(channel).ModelInfer.with_call(
                request, metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
                                   ("x-request-id", "grpc-trace")))
        assert dict(call.trailing_metadata())["x-request-id"] == "grpc-trace"
        batch = wait_for(exporter, "batch clf:1")
    finally:
        server.should_exit = True
        thread.join(15)
    span = next(s for s in exporter.get_finished_spans() if s.name == "infer clf")
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.attributes["modelyard.request_id"] == "grpc-trace"
    assert span.attributes["modelyard.version"] == "clf:1"
    assert batch and batch[0].context.trace_id == span.context.trace_id
