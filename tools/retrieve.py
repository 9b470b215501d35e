"""Build a retrieval index from a feature file and query it; print ranked lists, draw them, evaluate them.

  python tools/retrieve.py build GALLERY.npz --out INDEX_DIR [--backend auto|faiss|exact] [--metric ...]
  python tools/retrieve.py query INDEX_DIR_OR_GALLERY.npz QUERY.npz --topk 10 \\
      [--vis-dir DIR --num-vis 20 --root DATA_ROOT] [--out ranked.json] [--evaluate --protocol torchreid]

Feature files are the ``.npz`` of ``tools/extract_features.py`` (features, pids, camids, paths). Marks:
good = same pid, other camera; junk = same pid and camera, or pid -1; wrong = anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import numpy as np

from video_attn.evaluation.reid import PROTOCOLS, evaluate_features
from video_attn.retrieval import (
    GOOD,
    JUNK,
    FeatureFileError,
    RetrievalIndex,
    load_features,
    save_ranked_lists,
    search_ranked_lists,
)

MARK_NAMES = {GOOD: "good", JUNK: "junk", 0: "wrong"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def index_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--backend",
            choices=("auto", "faiss", "exact"),
            default="auto",
            help="faiss when installed (auto), or exact torch top-k",
        )
        p.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean")
        p.add_argument("--no-normalize", action="store_true", help="do not L2-normalise the features")
        p.add_argument(
            "--index-type",
            choices=("auto", "flat", "ivf"),
            default="auto",
            help="faiss only: flat (exact) or IVF (approximate; auto for >= 200k items)",
        )
        p.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4 sqrt(N))")
        p.add_argument("--nprobe", type=int, default=None, help="IVF lists searched (default nlist/16)")

    build = sub.add_parser("build", help="index a gallery feature file")
    build.add_argument("gallery", help="gallery features .npz")
    build.add_argument("--out", required=True, help="index directory to write")
    index_options(build)

    query = sub.add_parser("query", help="rank the gallery for every query")
    query.add_argument("index", help="index directory (from build) or a gallery features .npz")
    query.add_argument("queries", help="query features .npz")
    query.add_argument("--topk", type=int, default=10)
    query.add_argument("--vis-dir", default=None, help="write one ranked-list picture per query here")
    query.add_argument("--num-vis", type=int, default=20, help="number of queries to draw")
    query.add_argument(
        "--root", default=None, help="folder the relative paths of the feature files are under"
    )
    query.add_argument("--exclude-junk", action="store_true", help="drop junk hits and refill the list")
    query.add_argument(
        "--keep-minus-one", action="store_true", help="treat pid -1 as an ordinary identity instead of junk"
    )
    query.add_argument("--num-print", type=int, default=None, help="print only the first N ranked lists")
    query.add_argument("--out", default=None, help="write the ranked lists as JSON")
    query.add_argument(
        "--evaluate",
        action="store_true",
        help="also compute mAP / CMC / mINP of the queries against the whole gallery",
    )
    query.add_argument("--protocol", choices=PROTOCOLS, default="torchreid")
    index_options(query)
    return parser.parse_args(argv)


def open_index(args: argparse.Namespace) -> RetrievalIndex:
    if os.path.isdir(args.index):
        return RetrievalIndex.load(args.index)
    gallery = load_features(args.index).only_valid(args.index)
    return RetrievalIndex(
        gallery, args.metric, not args.no_normalize, args.backend, args.index_type, args.nlist, args.nprobe
    )


def run_build(args: argparse.Namespace) -> None:
    gallery = load_features(args.gallery).only_valid(args.gallery)
    index = RetrievalIndex(
        gallery, args.metric, not args.no_normalize, args.backend, args.index_type, args.nlist, args.nprobe
    )
    index.save(args.out)
    detail = f", nlist {index.nlist}, nprobe {index.nprobe}" if index.index_type == "ivf" else ""
    print(
        f"indexed {len(index)} items ({index.dim}-d, {index.metric}, {index.backend} {index.index_type}"
        f"{detail}) -> {args.out}"
    )


def run_query(args: argparse.Namespace) -> None:
    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    index = open_index(args)
    queries = load_features(args.queries).only_valid(args.queries)
    gallery = index.gallery
    ranked = search_ranked_lists(index, queries, args.topk, args.exclude_junk, not args.keep_minus_one)
    for r in ranked[: args.num_print]:
        head = f"query {r.query}"
        if queries.pids is not None:
            head += f" pid={queries.pids[r.query]}"
        if queries.camids is not None:
            head += f" cam={queries.camids[r.query]}"
        if queries.paths is not None:
            head += f" {queries.paths[r.query]}"
        hits = []
        for i, (g, d) in enumerate(zip(r.indices, r.distances)):
            hit = f"{g}"
            if gallery.pids is not None:
                hit += f"(pid {gallery.pids[g]}"
                hit += f", {MARK_NAMES[int(r.labels[i])]})" if r.labels is not None else ")"
            hits.append(f"{hit} {d:.4f}")
        print(f"{head}\n  " + " | ".join(hits))
    if args.out:
        lists = [
            {
                "query": int(r.query),
                "gallery": r.indices.tolist(),
                "distances": [float(d) for d in r.distances],
                "marks": None if r.labels is None else [MARK_NAMES[int(m)] for m in r.labels],
            }
            for r in ranked
        ]
        with open(args.out, "w") as f:
            json.dump({"topk": args.topk, "metric": index.metric, "ranked_lists": lists}, f)
        print(f"ranked lists -> {args.out}")
    if args.vis_dir:
        files = save_ranked_lists(ranked, queries, gallery, args.vis_dir, args.num_vis, root=args.root)
        print(f"{len(files)} ranked-list pictures -> {args.vis_dir}")
    if args.evaluate:
        evaluate(args, index, queries)


def evaluate(args: argparse.Namespace, index: RetrievalIndex, queries) -> None:
    gallery = index.gallery
    missing = [
        name
        for name, fs in (("query", queries), ("gallery", gallery))
        if fs.pids is None or fs.camids is None
    ]
    if missing:
        raise ValueError(f"--evaluate needs pids and camids in the {' and '.join(missing)} features")
    if gallery.features.shape[1] == 0:
        raise ValueError("--evaluate needs gallery features: pass the gallery .npz, not a faiss index")
    result = evaluate_features(
        queries.features,
        gallery.features,
        queries.pids,
        gallery.pids,
        queries.camids,
        gallery.camids,
        metric=index.metric,
        normalize=index.normalize,
        protocol=args.protocol,
    )
    cmc = result["cmc"]
    print(
        f"{args.protocol}: mAP {100 * result['mAP']:.2f}  mINP {100 * result['mINP']:.2f}  "
        + "  ".join(f"rank{k} {100 * cmc[k - 1]:.2f}" for k in (1, 5, 10, 20) if k <= len(cmc))
        + f"  ({result['num_valid_queries']} queries counted, {result['num_skipped_queries']} skipped)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build":
            run_build(args)
        else:
            run_query(args)
    except (FeatureFileError, FileNotFoundError, ImportError, ValueError) as err:
        print(f"retrieve.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
