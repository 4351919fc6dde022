#!/usr/bin/env bash
# `make crash-drill`: a guest's kernel panics on purpose (CrashDrillTests writes c to
# /proc/sysrq-trigger), and the matrix must show what it does with a death: exit 1 (no rule names
# the crash), the panic with its call trace read from the console (a panic stops the guest before
# its log recorder writes), the test run again in a fresh guest, and the crash said to recur.
set -uo pipefail
cd "$(dirname "$0")/.."
kernel=${1:-6.1}
out=.build/crash-drill
rm -rf "$out"
XFRMLAB_CRASH_DRILL=1 .build/debug/xfrmlab matrix --kernel "$kernel" --filter CrashDrill --no-retry --plain --output "$out"
status=$?
if [ "$status" != 1 ]; then
    echo "crash-drill: the matrix exited $status, not 1: a crash no rule names must fail it" >&2
    exit 1
fi
python3 - "$out/report.json" <<'PY'
import json, os, sys
report = json.load(open(sys.argv[1]))
k = report["kernels"][0]
problems = []
if k["status"] != "guest-died":
    problems.append(f"status {k['status']}, not guest-died")
crashes = k.get("crashes", [])
if not crashes:
    problems.append("no crash recorded")
for c in crashes:
    if "sysrq_handle_crash" not in c["fingerprint"]:
        problems.append(f"fingerprint {c['fingerprint']} lacks sysrq_handle_crash")
    if c.get("recurred") is not True:
        problems.append(f"recurred is {c.get('recurred')}, not true")
    if c.get("known"):
        problems.append(f"named by a rule: {c['known']}")
if not os.path.isdir(os.path.join(k["directory"], "rerun")):
    problems.append("no fresh guest (no rerun directory)")
drill = [cell for id, cell in k["cells"].items() if "CrashDrill" in id]
if not drill or drill[0]["verdict"] not in ("did-not-finish", "warning", "fail"):
    problems.append(f"the drill's cell: {drill}")
if problems:
    print("crash-drill: FAILED: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
c = crashes[0]
print(f"crash-drill: OK on {k['kernel']['label']}: {c['headline']} at {' <- '.join(c['fingerprint'][:5])}; "
      f"ran again in a fresh guest, recurred; the matrix failed as it must")
PY
