"""Turn Schemathesis' reports into target/conformance/schemathesis.json.

Usage: summarize.py REPORT_DIR EXIT_CODE OUT_JSON

The JSON report has the totals (cases generated, failure kinds) but not the individual failing
requests; the JUnit report has one <failure> text per operation listing every failing test case with
the check, the response and a curl line. We keep both: totals for the report, one entry per failing
test case and check so each can be reproduced.
"""

import glob
import json
import re
import sys
import xml.etree.ElementTree as ET

report_dir, exit_code, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def newest(pattern):
    files = sorted(glob.glob(f"{report_dir}/{pattern}"))
    return files[-1] if files else None


summary = {"cases": 0, "ok": False, "exit_code": exit_code, "failures": [], "errors": [], "warnings": {}}
json_report = newest("json-*.json")
if json_report:
    rep = json.load(open(json_report))
    summary["cases"] = rep["test_cases"]["generated"]
    summary["schemathesis_version"] = rep.get("schemathesis_version")
    summary["seed"] = rep.get("seed")
    summary["running_time_s"] = round(rep.get("running_time", 0), 1)
    summary["operations"] = rep.get("operations")
    summary["failure_kinds"] = rep.get("failures", [])
    summary["errors"] = rep.get("errors", [])
    # Only the warnings that fired (the report lists every kind, most of them empty).
    summary["warnings"] = {k: v for k, v in (rep.get("warnings") or {}).items() if v}

CASE = re.compile(r"^\d+\. Test Case ID: (\S+)", re.M)
CHECK = re.compile(r"^- (ST\d+) (.+)$", re.M)
STATUS = re.compile(r"^\[(\d{3})\] (.*):$", re.M)
junit = newest("junit-*.xml")
if junit:
    for tc in ET.parse(junit).getroot().iter("testcase"):
        for node in list(tc.findall("failure")) + list(tc.findall("error")):
            text = node.text or node.get("message") or ""
            parts = CASE.split(text)
            # parts = [preamble, id1, body1, id2, body2, ...]; an <error> may have no case id.
            cases = list(zip(parts[1::2], parts[2::2])) or [(None, text)]
            for case_id, body in cases:
                status = STATUS.search(body)
                response = re.search(r"^\s+`(.*)`\s*$", body, re.M)
                curl = re.search(r"^\s+(curl .*)$", body, re.M)
                checks = CHECK.findall(body) or [(node.tag, node.get("message", ""))]
                for code, title in checks:
                    # The explanation is the text between this check's line and the next check or
                    # the response ("Received: 401 / Documented: 204, 404", "TRACE returned 405 ...").
                    detail = re.search(re.escape(f"- {code} {title}") + r"\n(.*?)(?=\n- ST|\n\[\d{3}\]|\Z)", body, re.S)
                    summary["failures"].append({
                        "operation": tc.get("name"),
                        "check": code,
                        "title": title.strip(),
                        "detail": " ".join(detail.group(1).split()) if detail else "",
                        "status": int(status.group(1)) if status else None,
                        "response": response.group(1)[:600] if response else None,
                        "curl": curl.group(1) if curl else None,
                        "test_case_id": case_id,
                    })

summary["ok"] = exit_code == 0 and not summary["failures"] and not summary["errors"] and json_report is not None
with open(out_path, "w") as f:
    json.dump(summary, f, indent=2, ensure_ascii=False)

print(f"schemathesis: {summary['cases']} generated cases, {len(summary['failures'])} failing checks, "
      f"{len(summary['errors'])} errors -> {'ok' if summary['ok'] else 'FAILED'} ({out_path})")
for f in summary["failures"]:
    print(f"  {f['check']} {f['operation']}: {f['title']} [{f['status']}] {f['detail'][:160]}")
