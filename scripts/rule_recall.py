#!/usr/bin/env python3
"""How well the rule pack alone separates the corpus: per language, insecure snippets with no
enforced finding (misses) and safe snippets with one (false positives). Uses the rules in
data/rules/ as they are on disk (no rebuild needed) through a release build of guardrank.

Usage: python3 scripts/rule_recall.py [--split train|holdout|all] [--show misses|fp|both] [LANG...]
Build first: cargo build --release
"""
import argparse, collections, json, os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/guardrank")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="train")
    ap.add_argument("--show", default="")
    ap.add_argument("langs", nargs="*")
    a = ap.parse_args()
    rows = [json.loads(l) for l in subprocess.run([BIN, "corpus", "export", "--split", a.split], cwd=ROOT,
                                                    capture_output=True, text=True, check=True).stdout.splitlines()]
    if a.langs:
        rows = [r for r in rows if r["language"] in a.langs]
    inp = "".join(json.dumps({"id": i, "code": r["code"], "language": r["language"]}) + "\n" for i, r in enumerate(rows))
    p = subprocess.run([BIN, "score", "--jsonl", "--rules", os.path.join(ROOT, "data/rules")], cwd=ROOT, input=inp,
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
        sys.exit(2)
    out = [json.loads(l) for l in p.stdout.splitlines()]
    stats = collections.defaultdict(collections.Counter)
    for r, o in zip(rows, out):
        if "error" in o:
            print("error:", o, file=sys.stderr)
            continue
        hit = [f["rule_id"] for f in o["findings"] if f.get("mode") != "monitor"]
        lab = r["label"]
        stats[r["language"]][(lab, bool(hit))] += 1
        if lab == 1 and not hit and a.show in ("misses", "both"):
            print(f"--- MISS {r['family']} ({r['language']})\n{r['code']}")
        if lab == 0 and hit and a.show in ("fp", "both"):
            print(f"--- FALSE POSITIVE {r['family']} ({r['language']}) rules={hit}\n{r['code']}")
    tot = collections.Counter()
    for lang in sorted(stats):
        s = stats[lang]
        tot.update(s)
        ins = s[(1, True)] + s[(1, False)]
        safe = s[(0, True)] + s[(0, False)]
        print(f"{lang:<12} insecure caught {s[(1, True)]:>4}/{ins:<4} ({s[(1, True)] / max(ins, 1):.0%})   safe flagged {s[(0, True)]:>3}/{safe}")
    ins = tot[(1, True)] + tot[(1, False)]
    print(f"{'all':<12} insecure caught {tot[(1, True)]:>4}/{ins:<4} ({tot[(1, True)] / max(ins, 1):.0%})   safe flagged {tot[(0, True)]:>3}/{tot[(0, True)] + tot[(0, False)]}")


if __name__ == "__main__":
    main()
