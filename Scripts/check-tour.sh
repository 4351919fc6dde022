#!/usr/bin/env bash
# Runs every command of README.md's "A five-minute tour" block, as written, and stops at the
# first that fails (as root, from the top of the repository). The README's promise, checked.
set -euo pipefail
cd "$(dirname "$0")/.."
script=$(awk '/^## A five-minute tour/ {tour=1} tour && /^```sh$/ {block=1; next} block && /^```$/ {exit} block {print}' README.md)
[ -n "$script" ] || { echo "check-tour: no sh block under '## A five-minute tour' in README.md" >&2; exit 1; }
echo "check-tour: $(grep -c '^\$B \|^make \|^chromium ' <<<"$script") commands"
bash -euo pipefail -x <<<"$script"
echo "check-tour: every command of the tour ran"
