# Sourced by the install-*.sh scripts: installs Debian packages, or, without
# root or apt-get, says which tests will be skipped and returns.
#
#   apt_install "<what skips without them>" PACKAGE...
apt_install() {
  local skipped=$1
  shift
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "$(basename "$0"): not root or no apt-get; $skipped will be skipped" >&2
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}
