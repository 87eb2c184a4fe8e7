#!/usr/bin/env bash
# The project's test command (see README), with the race detector. Suites
# that need root or network namespaces skip with a message when
# unprivileged.
#
# Usage: ./test.sh [go test flags] [packages]
#   ./test.sh                          every package (./...)
#   ./test.sh ./overlay ./dns/...      only these packages
#   ./test.sh -run TestPing ./overlay  flags and packages mixed
#   ./test.sh -run TestPing            flags only: every package
# A package is an argument that starts with ./ or ../ (or is . or ..) or
# with the module path; every other argument, and the value after a flag
# such as -run, goes to go test as is.
set -euo pipefail
cd "$(dirname "$0")"
module=github.com/agentnet/agentnet
pkgs=()
args=()
value_next=0
for a in "$@"; do
	if ((value_next)); then
		args+=("$a")
		value_next=0
		continue
	fi
	case "$a" in
	. | .. | ./* | ../* | "$module" | "$module"/*)
		pkgs+=("$a")
		;;
	-*=* | -v | -short | -race | -json | -failfast | -cover | -benchmem | -x | -n | -a | -trimpath | -fullpath | -shuffle=*)
		args+=("$a")
		;;
	-*)
		# A flag of go test that takes a value (-run X, -count N,
		# -timeout D, -tags T, ...): the next argument is its value.
		args+=("$a")
		value_next=1
		;;
	*)
		args+=("$a")
		;;
	esac
done
if ((${#pkgs[@]} == 0)); then
	pkgs=(./...)
fi
exec go test -race -timeout 20m -count=1 "${args[@]}" "${pkgs[@]}"
