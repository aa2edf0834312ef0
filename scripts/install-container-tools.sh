#!/usr/bin/env bash
# Installs Debian's buildah, podman and runc (no Docker daemon needed): what
# `make images` and the image test (tests/tests/cross/image.rs) use. Does
# nothing when they are installed; without root or apt-get it says so and
# the image test skips with a printed reason.
set -euo pipefail
source "$(dirname "$0")/lib/apt-install.sh"
if command -v buildah >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null; then
  exit 0
fi
apt_install "the image test" buildah podman runc
if command -v buildah >/dev/null; then
  echo "install-container-tools: $(buildah --version), $(podman --version)"
fi
