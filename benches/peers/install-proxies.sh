#!/bin/sh
# The peers of `mlmesh-bench proxy`: nginx and HAProxy from Debian, and
# h2load (nghttp2-client), the load generator every target is driven by.
# Pinned to the versions the published figures were measured with
# (docs/benchmarks.md#gateway-vs-nginx-and-haproxy). Benchmarks only:
# `make test` needs none of them.
set -eu
NGINX=1.22.1-9+deb12u12
HAPROXY=2.6.12-1+deb12u4
NGHTTP2=1.52.0-1+deb12u3
if dpkg-query -W -f '${Version}\n' nginx-light haproxy nghttp2-client 2>/dev/null \
    | tr '\n' ' ' | grep -qx "$NGINX $HAPROXY $NGHTTP2 "; then
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "nginx-light=$NGINX" "nginx-common=$NGINX" "haproxy=$HAPROXY" "nghttp2-client=$NGHTTP2"
# Debian starts the packaged services; the benchmark runs its own.
for s in nginx haproxy; do
    (service "$s" stop || true) >/dev/null 2>&1
done
