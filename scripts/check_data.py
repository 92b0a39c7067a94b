#!/usr/bin/env python3
"""Quick lint of data/ without building the crate: rule schema and examples, corpus schema and
counts. The authoritative checks are the Rust tests (`cargo test --test rules`); this mirrors
their comment masking closely enough for authors to iterate fast.

Usage: python3 scripts/check_data.py [rules|corpus] [FILE...]
"""
import os, re, sys, tomllib, collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LANGS = {"python", "javascript", "typescript", "java", "c", "cpp", "go", "rust", "php", "ruby",
         "csharp", "kotlin", "swift", "shell"}
HASH_LINE = {"python", "ruby", "shell"}
SLASH = {"c", "cpp", "java", "csharp", "go", "rust", "javascript", "typescript", "kotlin", "swift", "php"}


def mask(text, lang):
    """Comments become spaces (newlines kept); strings are kept verbatim."""
    out = list(text)
    i, n = 0, len(text)
    hash_c = lang in HASH_LINE or lang == "php" or lang is None
    slash_c = lang in SLASH or lang is None
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if (slash_c and c == "/" and nxt == "/") or (hash_c and c == "#" and not (lang == "php" and nxt == "[")):
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif slash_c and c == "/" and nxt == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
        elif c in "\"'`":
            if lang == "python" and text[i:i + 3] in ('"""', "'''"):
                j = text.find(text[i:i + 3], i + 3)
                i = n if j < 0 else j + 3
                continue
            if c == "'" and lang == "rust" and not re.match(r"'(\\.|[^\\'\n])'", text[i:i + 4]) and not text[i:i+2] == "'\\":
                i += 1  # a lifetime
                continue
            j = i + 1
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == c:
                    j += 1
                    break
                if text[j] == "\n" and c != "`":
                    break
                j += 1
            i = j
        else:
            i += 1
    return "".join(out)


def rule_hits(rule, text, lang):
    subject = text if rule.get("target") == "raw" else mask(text, lang)
    lines = subject.split("\n")
    hits = []
    for p in rule["patterns"]:
        for m in re.finditer(p, subject, re.M):
            if m.start() == m.end():
                continue
            l0 = subject.count("\n", 0, m.start())
            l1 = subject.count("\n", 0, m.end())
            span = "\n".join(lines[l0:l1 + 1])
            if any(re.search(u, span) for u in rule.get("unless", [])):
                continue
            hits.append((l0 + 1, m.group(0)))
    return hits


BANNED = [r"\(\?[=!<]", r"\\[1-9]", r"\(\?>", r"[*+?}]\+"]


def check_rules(files):
    errors, ids, per_lang = [], set(), collections.Counter()
    for f in files:
        with open(f, "rb") as fh:
            try:
                doc = tomllib.load(fh)
            except Exception as e:
                errors.append(f"{f}: TOML: {e}")
                continue
        for r in doc.get("rule", []):
            rid = r.get("id", "?")
            where = f"{os.path.basename(f)}:{rid}"
            for k in ("id", "languages", "cwe", "severity", "message", "patterns", "examples"):
                if k not in r:
                    errors.append(f"{where}: missing {k}")
            extra = set(r) - {"id", "languages", "cwe", "severity", "message", "patterns", "unless", "target", "mode", "examples"}
            if extra:
                errors.append(f"{where}: unknown keys {extra}")
            if rid in ids:
                errors.append(f"{where}: duplicate id")
            ids.add(rid)
            if r.get("severity") not in ("low", "medium", "high", "critical"):
                errors.append(f"{where}: bad severity")
            langs = r.get("languages", [])
            for l in langs:
                if l != "*" and l not in LANGS:
                    errors.append(f"{where}: unknown language {l}")
                per_lang[l] += 1
            if not re.match(r"^CWE-\d+$", r.get("cwe", "")):
                errors.append(f"{where}: bad cwe")
            for p in r.get("patterns", []) + r.get("unless", []):
                for b in BANNED:
                    if re.search(b, p):
                        errors.append(f"{where}: pattern uses syntax Rust regex lacks: {p}")
                try:
                    re.compile(p)
                except re.error as e:
                    errors.append(f"{where}: pattern does not compile: {e}")
            ex = r.get("examples", {})
            if not ex.get("insecure") or not ex.get("secure"):
                errors.append(f"{where}: needs insecure and secure examples")
            lang = None if langs == ["*"] or not langs else langs[0]
            try:
                for e in ex.get("insecure", []):
                    if not rule_hits(r, e, lang):
                        errors.append(f"{where}: insecure example not matched: {e[:80]!r}")
                for e in ex.get("secure", []):
                    if rule_hits(r, e, lang):
                        errors.append(f"{where}: secure example matched: {e[:80]!r}")
            except re.error:
                pass
    print(f"rules: {len(ids)}; per language: {dict(per_lang)}")
    return errors


def murmur3_32(data, seed):
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed
    n = len(data) - len(data) % 4
    for i in range(0, n, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
        h = ((h << 13) | (h >> 19)) & 0xFFFFFFFF
        h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
    tail = data[n:]
    k = 0
    for i, b in enumerate(tail):
        k |= b << (8 * i)
    if tail:
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def check_corpus(files):
    errors = []
    labels, kinds, langs = collections.Counter(), collections.Counter(), collections.Counter()
    fam_langs, holdout, codes = {}, collections.Counter(), set()
    for f in files:
        with open(f, "rb") as fh:
            try:
                doc = tomllib.load(fh)
            except Exception as e:
                errors.append(f"{f}: TOML: {e}")
                continue
        for i, s in enumerate(doc.get("snippet", [])):
            where = f"{os.path.relpath(f, ROOT)}#{i}"
            extra = set(s) - {"family", "language", "label", "kind", "cwe", "code"}
            if extra:
                errors.append(f"{where}: unknown keys {extra}")
            if s.get("language") not in LANGS:
                errors.append(f"{where}: bad language {s.get('language')}")
            if s.get("label") not in (0, 1):
                errors.append(f"{where}: bad label")
            k = s.get("kind")
            if k not in ("insecure", "secure", "near-miss", "benign"):
                errors.append(f"{where}: bad kind {k}")
            if (k == "insecure") != (s.get("label") == 1):
                errors.append(f"{where}: kind {k} disagrees with label {s.get('label')}")
            code = s.get("code", "")
            if not code.strip():
                errors.append(f"{where}: empty code")
            if code in codes:
                errors.append(f"{where}: duplicate code")
            codes.add(code)
            fam = s.get("family", "")
            fam_langs.setdefault(fam, set()).add(s.get("language"))
            labels[s.get("label")] += 1
            kinds[k] += 1
            langs[s.get("language")] += 1
            if murmur3_32(fam.encode(), 0x9747B28C) % 5 == 0:
                holdout[s.get("label")] += 1
    print(f"snippets: {sum(labels.values())}; labels: {dict(labels)}; kinds: {dict(kinds)}")
    print(f"languages: {dict(langs)}; families: {len(fam_langs)}; holdout labels: {dict(holdout)}")
    return errors


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    files = sys.argv[2:]
    errs = []
    if what in ("rules", "all"):
        fs = files or sorted(os.path.join(ROOT, "data/rules", f) for f in os.listdir(os.path.join(ROOT, "data/rules")) if f.endswith(".toml"))
        errs += check_rules(fs)
    if what in ("corpus", "all"):
        fs = files if what == "corpus" and files else sorted(
            os.path.join(d, f) for d, _, fl in os.walk(os.path.join(ROOT, "data/corpus")) for f in fl if f.endswith(".toml"))
        errs += check_corpus(fs)
    for e in errs:
        print("ERROR:", e)
    print(f"{len(errs)} errors")
    sys.exit(1 if errs else 0)


if __name__ == "__main__":
    main()
