#!/usr/bin/env bash
# Assembles a minimal runtime base image from this machine's own files, for
# machines that cannot pull one (no registry access, as in CI here): glibc,
# libgcc, libstdc++ (ONNX Runtime needs it), CA certificates, and a
# `nonroot` user 65532 — what gcr.io/distroless/cc-debian12:nonroot holds.
# Binaries built on this machine run on it, as they link the same glibc.
#
#   deploy/docker/make-runtime-base.sh [IMAGE]    (default localhost/mlmesh-runtime-base:local)
set -euo pipefail

IMAGE=${1:-localhost/mlmesh-runtime-base:local}
LIBDIR=/lib/x86_64-linux-gnu
ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$ctr")

mkdir -p "$root/lib64" "$root$LIBDIR" "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
chmod 1777 "$root/tmp"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
for lib in libc.so.6 libm.so.6 libgcc_s.so.1 libstdc++.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do
  cp -L "$LIBDIR/$lib" "$root$LIBDIR/"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
chown 65532:65532 "$root/home/nonroot"
buildah unmount "$ctr" >/dev/null
buildah config --user 65532:65532 --workingdir /home/nonroot \
  --label org.opencontainers.image.description="mlmesh runtime base assembled from the build machine's glibc" "$ctr"
buildah commit --quiet "$ctr" "$IMAGE" >/dev/null
echo "$IMAGE"
