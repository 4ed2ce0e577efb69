#!/usr/bin/env python3
"""Scriptable OTLP/HTTP test receiver for the exporter tests.

Decodes every request with the official opentelemetry-proto messages: protobuf bodies with
ParseFromString, JSON bodies with json_format.Parse after turning the OTLP/JSON hex ids into the
base64 that proto3 JSON expects (so unknown keys or wrong types fail the request with 400).
gzip bodies (Content-Encoding: gzip) are inflated first.

Listens on 127.0.0.1 only. Prints "PORT <n>" on stdout once listening.

Control (POST, JSON body; answered before any scripted response is consumed):
  /control/script    {"path": "/v1/traces", "responses": [{"status": 503}, {"status": 429, "retryAfter": "2"},
                      {"status": 400}, {"status": 413, "ifSpansOver": 1}, {"hang": 30},
                      {"status": 200, "rejected": 2, "message": "bad"}]}  consumed in order, then 200
  /control/received  -> {"requests": [...], "traces": [span dicts], "metrics": [metric dicts],
                         "logs": [log record dicts]}
  /control/reset     clears script and records

Requires: pip install opentelemetry-proto   (pulls in protobuf)
"""
import argparse
import base64
import gzip
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

LOCK = threading.Lock()
SCRIPTS = {}  # path -> list of response dicts
REQUESTS = []  # summaries of every data request, including refused ones
SPANS = []
METRICS = []
LOGS = []

SERVICES = {  # path -> (request, response) messages
    "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "/v1/metrics": (metrics_service_pb2.ExportMetricsServiceRequest, metrics_service_pb2.ExportMetricsServiceResponse),
    "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind == "kvlist_value":
        return attrs(v.kvlist_value.values)
    return None


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def hex_ids_to_base64(node):
    """OTLP/JSON spells traceId/spanId/parentSpanId in hex; proto3 JSON expects base64."""
    if isinstance(node, dict):
        for key, value in list(node.items()):
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            else:
                hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            hex_ids_to_base64(item)


def decode(path, body, content_type):
    msg = SERVICES[path][0]()
    if content_type.startswith("application/json"):
        doc = json.loads(body)
        hex_ids_to_base64(doc)
        json_format.ParseDict(doc, msg)
    elif content_type.startswith("application/x-protobuf"):
        msg.ParseFromString(body)
    else:
        raise ValueError("unexpected content type %r" % content_type)
    return msg


def record(path, msg):
    count = 0
    if path == "/v1/traces":
        for rs in msg.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    count += 1
                    SPANS.append({
                        "name": s.name, "kind": s.kind, "traceId": s.trace_id.hex(), "spanId": s.span_id.hex(),
                        "parentSpanId": s.parent_span_id.hex(), "flags": s.flags,
                        "startTimeUnixNano": s.start_time_unix_nano, "endTimeUnixNano": s.end_time_unix_nano,
                        "status": {"code": s.status.code, "message": s.status.message},
                        "attributes": attrs(s.attributes), "resource": resource,
                        "scope": {"name": ss.scope.name, "version": ss.scope.version},
                    })
    elif path == "/v1/logs":
        for rl in msg.resource_logs:
            resource = attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    count += 1
                    LOGS.append({
                        "timeUnixNano": r.time_unix_nano, "observedTimeUnixNano": r.observed_time_unix_nano,
                        "severityNumber": r.severity_number, "severityText": r.severity_text,
                        "body": any_value(r.body) if r.HasField("body") else None,
                        "attributes": attrs(r.attributes), "resource": resource,
                        "scope": {"name": sl.scope.name, "version": sl.scope.version},
                    })
    else:
        for rm in msg.resource_metrics:
            resource = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    entry = {"name": m.name, "unit": m.unit, "type": kind, "resource": resource, "points": []}
                    if kind == "histogram":
                        entry["temporality"] = m.histogram.aggregation_temporality
                        for p in m.histogram.data_points:
                            count += 1
                            entry["points"].append({
                                "attributes": attrs(p.attributes), "count": p.count, "sum": p.sum,
                                "bucketCounts": list(p.bucket_counts), "explicitBounds": list(p.explicit_bounds),
                                "start": p.start_time_unix_nano, "time": p.time_unix_nano,
                            })
                    elif kind == "sum":
                        entry["temporality"] = m.sum.aggregation_temporality
                        entry["monotonic"] = m.sum.is_monotonic
                        for p in m.sum.data_points:
                            count += 1
                            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                            entry["points"].append({"attributes": attrs(p.attributes), "value": value})
                    elif kind == "gauge":
                        for p in m.gauge.data_points:
                            count += 1
                            value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                            entry["points"].append({"attributes": attrs(p.attributes), "value": value})
                    METRICS.append(entry)
    return count


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep the test output quiet
        pass

    def reply(self, status, body=b"", content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.path.startswith("/control/"):
            return self.control(raw)
        if self.path not in SERVICES:
            return self.reply(404, b"no such path")
        encoding = self.headers.get("Content-Encoding", "")
        content_type = self.headers.get("Content-Type", "")
        try:
            body = gzip.decompress(raw) if encoding == "gzip" else raw
            msg = decode(self.path, body, content_type)
        except Exception as error:  # a malformed request is a test failure: record it
            with LOCK:
                REQUESTS.append({"path": self.path, "error": repr(error), "contentType": content_type,
                                 "encoding": encoding})
            return self.reply(400, json.dumps({"error": repr(error)}).encode())
        if self.path == "/v1/traces":
            items = sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
        elif self.path == "/v1/logs":
            items = sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)
        else:
            items = -1
        with LOCK:
            script = SCRIPTS.get(self.path, [])
            action = None
            while script:
                candidate = script[0]
                if "ifSpansOver" in candidate and items <= candidate["ifSpansOver"]:
                    break  # conditional 413: only batches above the size are refused
                action = script.pop(0)
                break
            summary = {"path": self.path, "contentType": content_type, "encoding": encoding,
                       "bytes": len(raw), "items": items, "time": time.time(),
                       "headers": {k.lower(): v for k, v in self.headers.items()},
                       "answer": (action or {}).get("status", 200) if not (action or {}).get("hang") else "hang"}
            REQUESTS.append(summary)
        if action and action.get("hang"):
            time.sleep(action["hang"])
            self.close_connection = True
            return
        if action and action.get("status", 200) >= 300:
            headers = {"Retry-After": action["retryAfter"]} if "retryAfter" in action else None
            return self.reply(action["status"], b'{"message":"scripted failure"}', headers=headers)
        with LOCK:
            record(self.path, msg)
        if action and action.get("bodyBytes"):
            return self.reply(200, b"\0" * action["bodyBytes"], content_type="application/x-protobuf")
        response = SERVICES[self.path][1]()
        if action and action.get("rejected"):
            if self.path == "/v1/traces":
                response.partial_success.rejected_spans = action["rejected"]
            elif self.path == "/v1/logs":
                response.partial_success.rejected_log_records = action["rejected"]
            else:
                response.partial_success.rejected_data_points = action["rejected"]
            response.partial_success.error_message = action.get("message", "")
        if content_type.startswith("application/json"):
            self.reply(200, json_format.MessageToJson(response).encode())
        else:
            self.reply(200, response.SerializeToString(), content_type="application/x-protobuf")

    def control(self, raw):
        command = self.path[len("/control/"):]
        with LOCK:
            if command == "script":
                doc = json.loads(raw)
                SCRIPTS.setdefault(doc["path"], []).extend(doc["responses"])
                body = b"{}"
            elif command == "received":
                body = json.dumps({"requests": REQUESTS, "traces": SPANS, "metrics": METRICS, "logs": LOGS}).encode()
            elif command == "reset":
                SCRIPTS.clear(); REQUESTS.clear(); SPANS.clear(); METRICS.clear(); LOGS.clear()
                body = b"{}"
            else:
                return self.reply(404, b"unknown control command")
        self.reply(200, body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks an ephemeral port")
    parser.add_argument("--start-after", type=float, default=0, help="seconds to stay down before listening")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="private key of --tls-cert")
    parser.add_argument("--client-ca", help="require client certificates signed by this CA (mTLS)")
    args = parser.parse_args()
    if args.start_after:
        time.sleep(args.start_after)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.tls_cert:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(args.client_ca)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
