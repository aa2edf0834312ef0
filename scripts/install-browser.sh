#!/usr/bin/env bash
# Installs the browser the console's test drives: Debian's chromium and
# chromium-driver (the same release, so the driver matches the browser),
# plus Selenium from PyPI (pinned in scripts/browser.txt). Nothing is
# downloaded from anywhere else: Selenium is pointed at the system driver.
# Without root or apt-get it says so and the browser test skips with a
# printed reason.
set -euo pipefail
source "$(dirname "$0")/lib/apt-install.sh"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_install "the console's browser test" --no-install-recommends chromium chromium-driver fonts-dejavu-core
fi
"$(dirname "$0")/fetch-python-packages.sh" browser "$(dirname "$0")/browser.txt"
