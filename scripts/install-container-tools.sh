#!/usr/bin/env bash
# Installs Debian's buildah, podman and runc (no Docker daemon needed): what
# `make images` and the image test (tests/tests/cross/image.rs) use. Does
# nothing when they are installed; without root or apt-get it says so and
# the image test skips with a printed reason.
set -euo pipefail
if command -v buildah >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-container-tools: not root or no apt-get; the image test will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq buildah podman runc >/dev/null
echo "install-container-tools: $(buildah --version), $(podman --version)"
