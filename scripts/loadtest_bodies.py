#!/usr/bin/env python3
"""Request bodies for scripts/loadtest.sh (stdlib only, deterministic for a given seed).

Two subcommands:

  rank      writes a pool of POST /v1/rank bodies, one compact JSON object a line, built from
            the labelled snippets in data/corpus/<language>/*.toml: four candidates of one
            language per request (a mix of insecure twins, their secure counterparts,
            near-misses and benign code), realistic logprobs, a prompt and a file path, one
            distinct user per body, and about 1.3 KB each. Candidate ids carry the body's index
            (`cmpl-<index>-<k>`) so that a rank answer tells which body it answers, which the
            pre-pass needs to know what each impression contained. Also writes a metadata file
            (user and per-candidate label of every body) for `feedback`, and one representative
            body for the open-loop phase.

  feedback  reads the (request_id, body index) pairs captured by the pre-pass and writes
            POST /v1/feedback batches of 50 events, one batch a line, dealt round-robin into one
            file per wrk thread. Every (request_id, candidate_id, outcome) appears at most once
            across everything it writes: for each impression the user accepts one candidate
            (a secure one when there is one), rejects the three others and reports every
            insecure one as insecure. What one user action sends stays together: the accept
            and the three rejects of a decision, or one report. These groups, of all
            impressions, are shuffled, so a batch of 50 spans about 24 impressions of as many
            users, as a plugin backend's would (--order events shuffles single events
            instead, the workload before 2026-11-23: about 50 impressions a batch).

Both print a one-line JSON summary on stdout for the caller.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tomllib
from pathlib import Path

CANDIDATES = 4
OUTCOMES = ("accepted", "rejected", "reported_insecure")

# Completion traffic is not uniform across languages; weight the common ones.
LANGUAGE_WEIGHTS = {
    "python": 5,
    "typescript": 4,
    "javascript": 4,
    "java": 3,
    "go": 2,
    "csharp": 2,
    "cpp": 2,
    "c": 1,
    "rust": 1,
    "php": 1,
    "ruby": 1,
    "kotlin": 1,
    "swift": 1,
    "shell": 1,
}

EXTENSIONS = {
    "python": "py",
    "typescript": "ts",
    "javascript": "js",
    "java": "java",
    "go": "go",
    "csharp": "cs",
    "cpp": "cpp",
    "c": "c",
    "rust": "rs",
    "php": "php",
    "ruby": "rb",
    "kotlin": "kt",
    "swift": "swift",
    "shell": "sh",
}

DIRS = ("src", "app", "services/api", "internal/handlers", "lib", "pkg/store", "web/routes", "tools")


def load_corpus(root: Path) -> dict[str, list[dict]]:
    corpus: dict[str, list[dict]] = {}
    for lang in LANGUAGE_WEIGHTS:
        snippets: list[dict] = []
        for f in sorted((root / lang).glob("*.toml")):
            snippets += tomllib.loads(f.read_text(encoding="utf-8")).get("snippet", [])
        # Completion-sized candidates only: four of them make a body of about 1.3 KB.
        snippets = [s for s in snippets if 60 <= len(s["code"].encode()) <= 600]
        if snippets:
            corpus[lang] = snippets
    if not corpus:
        sys.exit(f"no snippets under {root}")
    return corpus


def pick_candidates(rng: random.Random, snippets: list[dict], families: dict[str, list[dict]]) -> list[dict]:
    """Four distinct snippets: usually an insecure/secure twin pair plus two others."""
    chosen: list[dict] = []
    if rng.random() < 0.7:
        fam = rng.choice([f for f, members in families.items() if len({m["kind"] for m in members}) > 1])
        members = families[fam]
        insecure = [m for m in members if m["label"] == 1]
        secure = [m for m in members if m["label"] == 0]
        chosen = [rng.choice(insecure), rng.choice(secure)]
    while len(chosen) < CANDIDATES:
        s = rng.choice(snippets)
        if all(s is not c for c in chosen):
            chosen.append(s)
    rng.shuffle(chosen)
    return chosen


def rank_body(rng: random.Random, index: int, user: str, lang: str, cands: list[dict]) -> dict:
    logprobs = sorted((round(-rng.uniform(0.2, 6.0), 3) for _ in cands), reverse=True)
    first_line = cands[0]["code"].strip().splitlines()[0]
    path = f"{rng.choice(DIRS)}/{cands[0]['family'].split('.')[-1].replace('-', '_')}.{EXTENSIONS[lang]}"
    return {
        "user_id": user,
        "language": lang,
        "file_path": path,
        "prompt": first_line + "\n",
        "candidates": [
            {"id": f"cmpl-{index}-{k}", "text": c["code"], "logprob": lp}
            for k, (c, lp) in enumerate(zip(cands, logprobs))
        ],
    }


def cmd_rank(a: argparse.Namespace) -> None:
    rng = random.Random(a.seed)
    corpus = load_corpus(Path(a.corpus))
    langs = sorted(corpus)
    weights = [LANGUAGE_WEIGHTS[lang] for lang in langs]
    fams = {lang: {} for lang in langs}
    for lang in langs:
        for s in corpus[lang]:
            fams[lang].setdefault(s["family"], []).append(s)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes: list[int] = []
    meta: list[dict] = []
    insecure = 0
    by_lang: dict[str, int] = {}
    with open(out / "rank_bodies.jsonl", "w", encoding="utf-8") as f:
        for i in range(a.count):
            lang = rng.choices(langs, weights)[0]
            user = f"dev{i % a.users:06d}@example.com"
            # Draw until the body lands in the size window (most draws do within a few tries).
            best = None
            for _ in range(200):
                cands = pick_candidates(rng, corpus[lang], fams[lang])
                text = json.dumps(rank_body(rng, i, user, lang, cands), separators=(",", ":"), ensure_ascii=False)
                n = len(text.encode())
                if best is None or abs(n - a.target_bytes) < abs(best[1] - a.target_bytes):
                    best = (text, n, [c["label"] for c in cands])
                if abs(n - a.target_bytes) <= a.tolerance:
                    break
            text, n, labels = best
            insecure += sum(labels)
            by_lang[lang] = by_lang.get(lang, 0) + 1
            sizes.append(n)
            meta.append({"user": user, "labels": labels})
            f.write(text + "\n")
    (out / "rank_meta.json").write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
    mean = sum(sizes) / len(sizes)
    avg_events = sum(CANDIDATES + sum(m["labels"]) for m in meta) / len(meta)
    sizes.sort()
    print(
        json.dumps(
            {
                "bodies": a.count,
                "users": min(a.count, a.users),
                "candidates_per_body": CANDIDATES,
                "body_bytes_mean": round(mean),
                "body_bytes_min": sizes[0],
                "body_bytes_max": sizes[-1],
                "insecure_candidate_share": round(insecure / (a.count * CANDIDATES), 3),
                "languages": dict(sorted(by_lang.items(), key=lambda kv: -kv[1])),
                "feedback_events_per_impression": round(avg_events, 3),
            }
        )
    )


def cmd_feedback(a: argparse.Namespace) -> None:
    rng = random.Random(a.seed)
    meta = json.loads(Path(a.meta).read_text(encoding="utf-8"))
    impressions: list[tuple[str, int]] = []
    for p in a.ids:
        for line in Path(p).read_text(encoding="utf-8").splitlines():
            if line.strip():
                rid, idx = line.split("\t")
                impressions.append((rid, int(idx)))
    rids = [r for r, _ in impressions]
    if len(set(rids)) != len(rids):
        sys.exit("feedback: a request_id appears twice in the captured impressions")
    # One event is (impression, candidate, outcome), packed in an int to keep the shuffle cheap.
    # A group is what one user action sends: the decision on an impression (one accepted, the
    # others rejected), or one report.
    groups: list[list[int]] = []
    for n, (_, idx) in enumerate(impressions):
        labels = meta[idx]["labels"]
        secure = [k for k, lab in enumerate(labels) if lab == 0]
        accepted = rng.choice(secure or list(range(CANDIDATES)))
        groups.append([(n * CANDIDATES + k) * len(OUTCOMES) + (0 if k == accepted else 1) for k in range(CANDIDATES)])
        groups.extend([(n * CANDIDATES + k) * len(OUTCOMES) + 2] for k, lab in enumerate(labels) if lab == 1)
    if a.order == "events":
        groups = [[e] for g in groups for e in g]
    rng.shuffle(groups)
    events = [e for g in groups for e in g]
    if len(set(events)) != len(events):
        sys.exit("feedback: duplicate event generated")
    batches = len(events) // a.batch
    if a.max_batches is not None:
        batches = min(batches, a.max_batches)
    files = [open(f"{a.out_prefix}.{t}.jsonl", "w", encoding="utf-8") for t in range(a.threads)]
    users: set[str] = set()
    used_impressions: set[int] = set()
    for b in range(batches):
        items = []
        for e in events[b * a.batch : (b + 1) * a.batch]:
            slot, outcome = divmod(e, len(OUTCOMES))
            n, k = divmod(slot, CANDIDATES)
            rid, idx = impressions[n]
            users.add(meta[idx]["user"])
            used_impressions.add(n)
            items.append({"request_id": rid, "candidate_id": f"cmpl-{idx}-{k}", "outcome": OUTCOMES[outcome]})
        files[b % a.threads].write(json.dumps({"events": items}, separators=(",", ":")) + "\n")
    for f in files:
        f.close()
    print(
        json.dumps(
            {
                "impressions": len(impressions),
                "impressions_referenced": len(used_impressions),
                "users_referenced": len(users),
                "events": batches * a.batch,
                "batches": batches,
                "events_per_batch": a.batch,
                "order": a.order,
                "threads": a.threads,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rank", help="write the pool of rank bodies")
    r.add_argument("--corpus", default="data/corpus")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--count", type=int, default=4096)
    r.add_argument("--users", type=int, default=4096, help="distinct user ids across the pool")
    r.add_argument("--target-bytes", type=int, default=1300)
    r.add_argument("--tolerance", type=int, default=150)
    r.add_argument("--seed", type=int, default=20261122)
    r.set_defaults(func=cmd_rank)
    f = sub.add_parser("feedback", help="write feedback batches for captured impressions")
    f.add_argument("--meta", required=True, help="rank_meta.json written by `rank`")
    f.add_argument("--ids", nargs="+", required=True, help="files of request_id<TAB>body index lines")
    f.add_argument("--out-prefix", required=True, help="writes PREFIX.<thread>.jsonl")
    f.add_argument("--threads", type=int, default=2)
    f.add_argument("--batch", type=int, default=50)
    f.add_argument("--max-batches", type=int, default=None)
    f.add_argument("--seed", type=int, default=20261123)
    f.add_argument(
        "--order",
        choices=("decisions", "events"),
        default="decisions",
        help="decisions: each impression's accept and rejects stay together, reports apart, in random order; "
        "events: every event in random order",
    )
    f.set_defaults(func=cmd_feedback)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
