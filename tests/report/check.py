#!/usr/bin/env python3
"""Checks a benchmark report (pubsub-bench report): the HTML is well formed (every element
closed in order), self-contained (nothing fetched: no src, no external href, no @import), and
has what it promises (the machine, the runs, latency and scaling plots as inline SVG, and a
note for each run that could not be made). Usage: check.py DIR"""
import json, os, sys
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Checker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.counts, self.text = [], [], {}, []

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        for name, value in attrs:
            if name == "src" or (name == "href" and value and "://" in value):
                self.errors.append(f"<{tag} {name}={value!r}> fetches something")
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            open_tag = self.stack[-1] if self.stack else None
            self.errors.append(f"</{tag}> at {self.getpos()} closes {open_tag}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def main(out):
    page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    c = Checker()
    c.feed(page)
    c.close()
    errors = list(c.errors)
    if c.stack:
        errors.append(f"never closed: {c.stack}")
    if "@import" in page:
        errors.append("the style imports something")
    text = " ".join(c.text)
    for heading in ["Machine", "Runs", "Latency percentiles", "Scaling", "Connections"]:
        if heading not in text:
            errors.append(f"no {heading} section")
    if c.counts.get("svg", 0) < 3:
        errors.append(f"only {c.counts.get('svg', 0)} inline plots")
    for needed in ["percentile", "CPU per delivery", "subscribers", "server", "ceiling"]:
        if needed not in text:
            errors.append(f"no '{needed}' label")
    lines = [json.loads(l) for l in open(os.path.join(out, "results.jsonl")) if l.strip()]
    if lines[0].get("scenario") != "machine":
        errors.append("results.jsonl does not start with the machine")
    runs = [l for l in lines[1:] if "skipped" not in l and "failed" not in l]
    if not runs or not all("command" in l for l in lines[1:]):
        errors.append("runs without their command lines")
    for l in lines[1:]:
        if ("skipped" in l or "failed" in l) and l["command"] not in page:
            errors.append(f"{l['command']} not measured and not said so")
    plots = os.listdir(os.path.join(out, "plots"))
    if len(plots) != c.counts.get("svg", 0):
        errors.append(f"{len(plots)} plot files for {c.counts.get('svg', 0)} inline plots")
    for e in errors:
        print("report:", e)
    print(f"report: {len(runs)} runs, {c.counts.get('svg', 0)} plots, {len(page)} bytes, "
          f"{'well formed' if not errors else 'BROKEN'}")
    print(f"report: {1 if not errors else 0} passed, {1 if errors else 0} failed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
