#!/usr/bin/env python3
"""An ADS server that none of the mesh's own code is in: Python grpcio (gRPC C-core) and
the Envoy API as the PyPI package xds-protos generates it.

It serves the canary istiod's proxyless generator (pilot/pkg/networking/grpcgen) would
serve for payment-service.default:8080 with a VirtualService sending the `end-user:
beta-tester` header to v2 and 90/10 of everyone else to v1/v2, and a DestinationRule
defining the subsets; plaintext (no ISTIO_MUTUAL):

  LDS  payment-service.default.svc.cluster.local:8080   API listener, HCM -> RDS over ADS
  RDS  outbound|8080||payment-service.default.svc.cluster.local
  CDS  outbound|8080|v1|payment-service.default.svc.cluster.local   (and v2), EDS over ADS
  EDS  the same names; the endpoints are --v1 and --v2

It behaves as the C-core and grpc-go servers the mesh meets (istiod, the Istio agent,
go-control-plane): gRPC response headers go out with the first response and not before; a
type is answered when it is subscribed or its subscription changes, only with the names
asked for (every listener or cluster when LDS or CDS asks for none), never an ACK or a
NACK; nonces and versions are kept per stream and type, and a request carrying an old
nonce is ignored. State of the world (StreamAggregatedResources) and incremental
(DeltaAggregatedResources).

Once listening it prints {"port": N} on stdout, then one JSON line per stream event,
request and response, to stdout or to --log FILE, for a test to check what the client
ACKed and NACKed. Requests carry "kind": "subscribe" (no nonce), "ack", "nack" or
"stale".

  python3 xds_server.py --port 0 --v1 127.0.0.1:50051 --v2 127.0.0.1:50052 [--log FILE]

Needs: pip install grpcio xds-protos
"""

import argparse
import itertools
import json
import signal
import sys
import threading
import time
import uuid
from concurrent import futures

import grpc
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.type.matcher.v3 import string_pb2

NAMESPACE = "default"
SERVICE = "payment-service"
HOST = f"{SERVICE}.{NAMESPACE}.svc.cluster.local"
PORT = 8080
LISTENER = f"{HOST}:{PORT}"
ROUTE = f"outbound|{PORT}||{HOST}"

LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
# Types for which an empty name list asks for everything (wildcard).
WILDCARD = {LDS, CDS}

VS_PATH = f"/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtual-service/{SERVICE}"


def subset_cluster(subset):
    return f"outbound|{PORT}|{subset}|{HOST}"


def packed(message):
    out = any_pb2.Any()
    out.Pack(message)
    return out


def ads_source():
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def socket_address(host, port):
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def listener():
    """The API listener istiod sends a proxyless client for host:port."""
    hcm = hcm_pb2.HttpConnectionManager(
        rds=hcm_pb2.Rds(config_source=ads_source(), route_config_name=ROUTE),
        # istiod's proxyless filters: fault injection, then the router (last).
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.fault", typed_config=packed(fault_pb2.HTTPFault())
            ),
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=packed(router_pb2.Router())
            ),
        ],
    )
    return listener_pb2.Listener(
        name=LISTENER,
        # istiod puts the service's VIP here; an API listener never binds it.
        address=socket_address("127.0.0.1", PORT),
        api_listener=api_listener_pb2.ApiListener(api_listener=packed(hcm)),
    )


def retry_policy():
    """Istio's default retry policy (no `retries` in the VirtualService)."""
    return route_components_pb2.RetryPolicy(
        retry_on="connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        num_retries=wrappers_pb2.UInt32Value(value=2),
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=packed(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
        retriable_status_codes=[503],
    )


def route_action(**target):
    return route_components_pb2.RouteAction(
        # No VirtualService timeout: istiod disables the route timeout (0s) ...
        timeout=duration_pb2.Duration(seconds=0),
        retry_policy=retry_policy(),
        # ... and, for gRPC, sets a zero max stream duration with the header cap off.
        max_stream_duration=route_components_pb2.RouteAction.MaxStreamDuration(
            max_stream_duration=duration_pb2.Duration(seconds=0),
            grpc_timeout_header_max=duration_pb2.Duration(seconds=0),
        ),
        **target,
    )


def config_metadata():
    meta = base_pb2.Metadata()
    istio = struct_pb2.Struct()
    istio.update({"config": VS_PATH})
    meta.filter_metadata["istio"].CopyFrom(istio)
    return meta


def route_configuration():
    """What istiod's sidecar virtual-host builder makes of the VirtualService."""
    beta = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(
            prefix="/",
            headers=[
                route_components_pb2.HeaderMatcher(
                    name="end-user",
                    string_match=string_pb2.StringMatcher(exact="beta-tester"),
                )
            ],
        ),
        route=route_action(cluster=subset_cluster("v2")),
        metadata=config_metadata(),
        decorator=route_components_pb2.Decorator(operation=f"{LISTENER}/*"),
    )
    split = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_action(
            weighted_clusters=route_components_pb2.WeightedCluster(
                clusters=[
                    route_components_pb2.WeightedCluster.ClusterWeight(
                        name=subset_cluster("v1"), weight=wrappers_pb2.UInt32Value(value=90)
                    ),
                    route_components_pb2.WeightedCluster.ClusterWeight(
                        name=subset_cluster("v2"), weight=wrappers_pb2.UInt32Value(value=10)
                    ),
                ]
            )
        ),
        metadata=config_metadata(),
        decorator=route_components_pb2.Decorator(operation=f"{LISTENER}/*"),
    )
    return route_pb2.RouteConfiguration(
        name=ROUTE,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=LISTENER,
                domains=[HOST, LISTENER, SERVICE, f"{SERVICE}:{PORT}"],
                routes=[beta, split],
                include_request_attempt_count=True,
            )
        ],
    )


def cluster(name):
    """istiod's proxyless EDS cluster: no TLS unless ISTIO_MUTUAL, round robin."""
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=name
        ),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )


def load_assignment(name, subset, addr):
    host, port = parse_addr(addr)
    meta = base_pb2.Metadata()
    istio = struct_pb2.Struct()
    istio.update({"workload": f"{SERVICE}-{subset};{NAMESPACE};{SERVICE};{subset};Kubernetes"})
    meta.filter_metadata["istio"].CopyFrom(istio)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(),
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=socket_address(host, port)
                        ),
                        health_status=health_check_pb2.HEALTHY,
                        metadata=meta,
                        load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
                    )
                ],
                load_balancing_weight=wrappers_pb2.UInt32Value(value=1),
            )
        ],
    )


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected IP:PORT")
    return host.strip("[]"), int(port)


def resources(v1, v2):
    """type_url -> name -> packed resource."""
    table = {
        LDS: {LISTENER: listener()},
        RDS: {ROUTE: route_configuration()},
        CDS: {subset_cluster(s): cluster(subset_cluster(s)) for s in ("v1", "v2")},
        EDS: {
            subset_cluster(s): load_assignment(subset_cluster(s), s, a)
            for s, a in (("v1", v1), ("v2", v2))
        },
    }
    return {t: {n: packed(r) for n, r in by_name.items()} for t, by_name in table.items()}


class Log:
    """JSON lines to a file or stdout, one writer at a time."""

    def __init__(self, out):
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, **fields):
        line = json.dumps(fields, sort_keys=True)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def status_fields(request):
    if not request.HasField("error_detail"):
        return {}
    return {"error_detail": {"code": request.error_detail.code,
                             "message": request.error_detail.message}}


class TypeState:
    """One resource type on one stream: what the client asked for, what it was sent."""

    def __init__(self):
        self.names = set()
        self.nonce = ""
        self.sent = {}  # delta: name -> version sent


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, table, version, log):
        self.table = table
        self.version = version
        self.log = log
        self.streams = itertools.count(1)
        # istiod names itself in every response.
        self.control_plane = base_pb2.ControlPlane(
            identifier=json.dumps({"Component": "istiod", "ID": "xds-server.py",
                                   "Info": {"version": "interop"}})
        )

    def _open(self, context, protocol):
        stream = next(self.streams)
        self.log(event="stream_open", stream=stream, protocol=protocol, peer=context.peer())
        context.add_callback(lambda: self.log(event="stream_closed", stream=stream))
        return stream

    def _classify(self, state, request, stream, names, **extra):
        """Logs a request and says whether it is one to answer."""
        fields = dict(event="request", stream=stream, type_url=request.type_url,
                      response_nonce=request.response_nonce, **extra)
        if request.HasField("node") and request.node.id:
            fields["node"] = request.node.id
        if not request.response_nonce:
            kind = "subscribe"
        elif state is None or request.response_nonce != state.nonce:
            kind = "stale"
        elif request.HasField("error_detail"):
            kind = "nack"
        else:
            kind = "ack"
        fields.update(kind=kind, resource_names=sorted(names), **status_fields(request))
        self.log(**fields)
        return kind

    # State of the world.

    def StreamAggregatedResources(self, request_iterator, context):
        stream = self._open(context, "sotw")
        states = {}
        for request in request_iterator:
            type_url = request.type_url
            names = set(request.resource_names)
            state = states.get(type_url)
            kind = self._classify(state, request, stream, names,
                                  version_info=request.version_info)
            if kind in ("stale", "nack"):
                continue
            if state is None:
                state = states[type_url] = TypeState()
            elif kind == "ack" and names == state.names:
                continue  # an ACK asks for nothing new
            state.names = names
            if not names and type_url not in WILDCARD:
                continue  # nothing of this type is watched any more
            known = self.table.get(type_url, {})
            chosen = sorted(known) if not names else sorted(n for n in names if n in known)
            state.nonce = uuid.uuid4().hex
            response = discovery_pb2.DiscoveryResponse(
                version_info=self.version,
                type_url=type_url,
                nonce=state.nonce,
                resources=[known[n] for n in chosen],
                control_plane=self.control_plane,
            )
            self.log(event="response", stream=stream, type_url=type_url,
                     version_info=self.version, nonce=state.nonce, resources=chosen)
            yield response

    # Incremental.

    def DeltaAggregatedResources(self, request_iterator, context):
        stream = self._open(context, "delta")
        states = {}
        for request in request_iterator:
            type_url = request.type_url
            state = states.get(type_url)
            kind = self._classify(
                state, request, stream, set(request.resource_names_subscribe),
                resource_names_unsubscribe=sorted(request.resource_names_unsubscribe),
                initial_resource_versions=dict(request.initial_resource_versions),
            )
            if kind in ("stale", "nack"):
                continue
            if state is None:
                state = states[type_url] = TypeState()
                # A reconnecting client says what it has; what is current is not resent.
                state.sent = dict(request.initial_resource_versions)
            before = set(state.names)
            state.names |= set(request.resource_names_subscribe)
            state.names -= set(request.resource_names_unsubscribe)
            for name in request.resource_names_unsubscribe:
                state.sent.pop(name, None)
            if kind == "ack" and state.names == before:
                continue
            known = self.table.get(type_url, {})
            wildcard = type_url in WILDCARD and ("*" in state.names or not state.names)
            wanted = sorted(known) if wildcard else sorted(n for n in state.names if n in known)
            send = [n for n in wanted if state.sent.get(n) != self.version]
            if not send:
                continue
            state.nonce = uuid.uuid4().hex
            response = discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=self.version,
                type_url=type_url,
                nonce=state.nonce,
                resources=[
                    discovery_pb2.Resource(name=n, version=self.version, resource=known[n])
                    for n in send
                ],
                control_plane=self.control_plane,
            )
            for name in send:
                state.sent[name] = self.version
            self.log(event="response", stream=stream, type_url=type_url,
                     version_info=self.version, nonce=state.nonce, resources=send)
            yield response


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--v1", type=str, required=True, help="v1 endpoint, IP:PORT")
    parser.add_argument("--v2", type=str, required=True, help="v2 endpoint, IP:PORT")
    parser.add_argument("--log", type=str, help="write the event lines here, not stdout")
    parser.add_argument("--stop-on-eof", action="store_true",
                        help="stop when stdin closes (a parent that dies takes the server along)")
    args = parser.parse_args()
    for endpoint in (args.v1, args.v2):
        try:
            parse_addr(endpoint)
        except argparse.ArgumentTypeError as e:
            parser.error(str(e))

    out = open(args.log, "a", encoding="utf-8") if args.log else sys.stdout
    # istiod's version is the push's time and number.
    version = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "/1"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
        Ads(resources(args.v1, args.v2), version, Log(out)), server
    )
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        sys.exit(f"xds_server.py: cannot listen on 127.0.0.1:{args.port}")
    server.start()
    print(json.dumps({"port": port}), flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.stop_on_eof:
        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()
    stop.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
