#!/usr/bin/env bash
# The official OpenAI Python client (pinned in scripts/openai-client.txt) for
# the gateway's compatibility test, into .cache/mlmesh/py/openai.
exec "$(dirname "$0")/fetch-python-packages.sh" openai "$(dirname "$0")/openai-client.txt"
