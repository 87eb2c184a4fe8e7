#!/usr/bin/env bash
# The project's test command (see README): every package, with the race
# detector. Suites that need root or network namespaces skip with a message
# when unprivileged.
set -euo pipefail
cd "$(dirname "$0")"
exec go test -race -timeout 20m -count=1 ./... "$@"
