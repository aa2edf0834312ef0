#!/usr/bin/env bash
# Installs the PostgreSQL server the registry's conformance tests start
# (Debian's postgresql-15, the version this project is tested with). Does
# nothing when a server is already installed; without root or apt-get it
# says so and the PostgreSQL tests skip with a printed reason.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-postgres: not root or no apt-get; the PostgreSQL registry tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
echo "install-postgres: $(ls -d /usr/lib/postgresql/*/bin) installed"
