#!/usr/bin/env bash
# Isolation: two copies of the whole suite at once on one machine must both pass (names,
# marks, tables, ports and /run paths of concurrent runs never collide; gc in one never
# touches the other's live runs). The 1,000-host test runs alone elsewhere.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.build/debug/XfrmLabPackageTests.xctest
out=.build/isolation
mkdir -p "$out"
"$bin" --testing-library swift-testing --skip LoadTests >"$out/a.log" 2>&1 & a=$!
"$bin" --testing-library swift-testing --skip LoadTests >"$out/b.log" 2>&1 & b=$!
wait $a; ra=$?
wait $b; rb=$?
for s in a b; do
    echo "suite $s: $(grep -a 'Test run with' "$out/$s.log" | tail -n 1 | sed 's/\x1b\[[0-9;]*m//g')"
done
if [ $ra -ne 0 ] || [ $rb -ne 0 ]; then
    grep -a -h '✘' "$out/a.log" "$out/b.log" | head -n 40
    echo "two suites at once: FAILED (logs in $out)"
    exit 1
fi
echo "two suites at once: both passed"
