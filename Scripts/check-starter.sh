#!/usr/bin/env bash
# What `xfrmlab init` makes must work for someone else's package: made in a temporary folder
# outside the repository (depending on this checkout by path), it builds; `swift test` passes on
# this machine with the ESP test skipped by the probe (or passing, on a kernel with ESP);
# `xfrmlab matrix --package` runs it on Debian's 6.1 in a VM, where the ESP test passes; its CI
# files are valid YAML (yamllint) and every command they run is one its README shows.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
B=$root/.build/debug/xfrmlab
kernel=${1:-6.1}
dir=$(mktemp -d /tmp/xfrmlab-starter.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$B" init "$dir/my-lab"
cd "$dir/my-lab"

echo "check-starter: swift build --build-tests"
swift build --build-tests 2>&1 | tail -1
swift test --skip-build 2>&1 | tee "$dir/host.log" | grep -E '^(✔|✘|↳)' || true
grep -q 'Test run with 2 tests .* passed' "$dir/host.log" || { echo "check-starter: swift test did not pass"; exit 1; }
if grep -q 'Test "marked 0x1.*" skipped' "$dir/host.log"; then
    grep -q 'kernel lacks ESP with rfc4106(gcm(aes))' "$dir/host.log" || { echo "check-starter: the ESP test skipped without the probe's reason"; exit 1; }
    echo "check-starter: on this machine the ESP test skipped with the probe's reason"
fi

echo "check-starter: xfrmlab matrix --package . --kernel host --kernel $kernel"
"$B" matrix --package . --kernel host --kernel "$kernel" --output "$dir/matrix" > "$dir/matrix.log" 2>&1 || { tail -40 "$dir/matrix.log"; exit 1; }
python3 - "$dir/matrix/report.json" "$kernel" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
vm = [k for k in report["kernels"] if k["kernel"]["label"] == sys.argv[2]][0]
cells = {t: c["verdict"] for t, c in vm["cells"].items()}
esp = [t for t in cells if "throughTheTunnel" in t]
assert esp and all(cells[t] == "pass" for t in esp), f"the ESP test on {sys.argv[2]}: {cells}"
assert all(v == "pass" for v in cells.values()), cells
print(f"check-starter: on {sys.argv[2]} ({vm['version']}) every test passed, the ESP one too: {cells}")
PY

echo "check-starter: the CI files"
yamllint -d relaxed --no-warnings .github/workflows/xfrmlab.yml .gitlab-ci.yml
python3 - <<'PY'
import re, yaml
readme = open("README.md").read()
commands = []
gh = yaml.safe_load(open(".github/workflows/xfrmlab.yml"))
for job in gh["jobs"].values():
    commands += [s["run"] for s in job["steps"] if "run" in s]
gl = yaml.safe_load(open(".gitlab-ci.yml"))
for job in gl.values():
    if isinstance(job, dict) and "script" in job:
        commands += job["script"]
missing = []
for c in commands:
    # A job's own variables stand for any value the README names.
    pattern = re.escape(c)
    pattern = re.sub(r"\\\$\\\{\\\{\\ matrix\\\.kernel\\ \\\}\\\}|\\\$KERNEL", r"\\S+", pattern)
    if not re.search(pattern, readme):
        missing.append(c)
assert not missing, f"commands the README does not show: {missing}"
print(f"check-starter: {len(commands)} CI commands, every one shown in the README")
PY
echo "check-starter: the starter works"
