#!/usr/bin/env bash
# Installs the PostgreSQL server the registry's conformance tests start
# (Debian's postgresql-15, the version this project is tested with). Does
# nothing when a server is already installed; without root or apt-get it
# says so and the PostgreSQL tests skip with a printed reason.
set -euo pipefail
source "$(dirname "$0")/lib/apt-install.sh"
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
apt_install "the PostgreSQL registry tests" --no-install-recommends postgresql-15
ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sed 's/^/install-postgres: installed /' || true
