"""Calls payment-service through gRPC's own C-core xDS client (Python grpcio).

Usage: GRPC_XDS_BOOTSTRAP=FILE python3 grpc_client.py TARGET COUNT [xds-creds]
With `xds-creds` the channel takes its security from xDS (the clusters' mTLS, with the
bootstrap's file_watcher certificates), falling back to plaintext. Prints one JSON line: {"counts": {"v1": N, ...}, "errors": N, "error_samples": [...]}.
The request is hand-encoded payment.v1.AuthorizeRequest bytes, so no generated stubs are
needed; the reply's x-payment-version header metadata says which subset served it.
"""

import json
import sys

import grpc
import grpc.experimental

METHOD = "/payment.v1.PaymentService/Authorize"
# AuthorizeRequest{order_id: "interop", amount_cents: 100, currency: "USD"}
REQUEST = b"\x0a\x07interop" + b"\x10\x64" + b"\x1a\x03USD"


def main():
    target, count = sys.argv[1], int(sys.argv[2])
    if sys.argv[3:] == ["xds-creds"]:
        creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
        channel = grpc.secure_channel(target, creds)
    else:
        channel = grpc.insecure_channel(target)
    counts, errors, samples = {}, 0, []
    with channel:
        call = channel.unary_unary(
            METHOD,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for i in range(count):
            try:
                # The first call waits for the xDS resolution; the rest are quick.
                _, c = call.with_call(
                    REQUEST, timeout=20 if i == 0 else 5, wait_for_ready=(i == 0)
                )
                version = dict(c.initial_metadata()).get("x-payment-version", "none")
                counts[version] = counts.get(version, 0) + 1
            except grpc.RpcError as e:
                errors += 1
                if len(samples) < 3:
                    samples.append(f"{e.code()}: {e.details()}")
    print(json.dumps({"counts": counts, "errors": errors, "error_samples": samples}))


if __name__ == "__main__":
    main()
