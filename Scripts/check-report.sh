#!/usr/bin/env bash
# After the matrix: open its report.html in headless Chromium, as a person would, and check what
# the browser rendered (not the file's text) against the run's report.json: the overall verdict,
# every kernel, and one table row per test. A screenshot, report.png, and the rendered DOM,
# report.dom.html, land beside it.
# Usage: Scripts/check-report.sh [RESULTS_DIR]   (default .build/matrix/latest)
set -euo pipefail
dir=$(cd "${1:-.build/matrix/latest}" && pwd)
chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || { echo "check-report: chromium is not installed (make deps installs it)"; exit 1; }
[ -f "$dir/report.html" ] || { echo "check-report: no $dir/report.html"; exit 1; }
run() { timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --user-data-dir="$dir/.chromium" "$@" "file://$dir/report.html" 2>/dev/null; }
run --dump-dom > "$dir/report.dom.html"
run --hide-scrollbars --window-size=1400,1000 --screenshot="$dir/report.png" >/dev/null
rm -rf "$dir/.chromium"
python3 - "$dir" <<'PY'
import json, os, re, sys
d = sys.argv[1]
dom = open(os.path.join(d, "report.dom.html"), encoding="utf-8", errors="replace").read()
report = json.load(open(os.path.join(d, "report.json")))
problems = []
verdict = "MATRIX OK" if report.get("ok") else "MATRIX FAILED"
if verdict not in dom:
    problems.append(f"the rendered page does not say {verdict}")
for k in report.get("kernels", []):
    label = k.get("kernel", {}).get("label", "?")
    if label not in dom:
        problems.append(f"kernel {label} is not on the rendered page")
rows = len(report.get("rows", []))
rendered = len(re.findall(r'<tr[^>]*class="[^"]*\btest\b', dom)) or len(re.findall(r'<td class="name"', dom))
if rows and rendered < rows:
    problems.append(f"{rows} tests in report.json, {rendered} rows rendered")
# Every bug report's verdict (REPRODUCES, FIXED, NOT APPLICABLE) is on the page, in its cell.
verdicts = sum(1 for k in report.get("kernels", []) for c in k.get("cells", {}).values() if c.get("report"))
shown = len(re.findall(r'<span class="report">', dom))
if shown < verdicts:
    problems.append(f"{verdicts} report verdicts in report.json, {shown} on the rendered page")
png = os.path.join(d, "report.png")
if not os.path.exists(png) or os.path.getsize(png) < 10000:
    problems.append("no screenshot (or a blank one)")
if problems:
    print("check-report: " + "; ".join(problems)); sys.exit(1)
print(f"check-report: Chromium rendered {d}/report.html: {verdict}, {len(report.get('kernels', []))} kernels, {rendered} test rows, {shown} report verdicts; screenshot {png}")
PY
