"""Reads ours.json and faiss.json and prints the comparison the issue asks for: build time,
bytes a vector, and queries/s at equal recall (ours at the smallest efSearch whose recall@10
reaches faiss's at efSearch 64).

    python3 compare.py OURS.json FAISS.json
"""
import json
import sys

ours, ref = (json.load(open(p)) for p in sys.argv[1:3])
ref64 = next(r for r in ref["runs"] if r["ef_search"] == 64)
print(f"faiss  M {ref['m']} efC {ref['ef_construction']}: build {ref['build_s']:.1f} s, {ref['bytes_per_vector']} B/vector")
for r in ref["runs"]:
    print(f"  faiss efSearch {r['ef_search']:4}: {r['qps']:7} q/s  recall@10 {r['recall_at_10']:.4f}  {r.get('distances_per_query', '?')} distances/query")
print(f"lamina M {ours['m']} efC {ours['ef_construction']}: build {ours['build_s']:.1f} s, {ours['bytes_per_vector']:.0f} B/vector")
for r in ours["runs"]:
    print(f"  lamina ef_search {r['ef_search']:4}: {r['qps']:7} q/s  recall@10 {r['recall_at_10']:.4f}  {r['distances_per_query']} distances/query")
for c in ours.get("crossover", []):
    print(f"  crossover at {c['vectors']:6} vectors (1 thread): exact {c['exact_qps_1_thread']} q/s, hnsw {c['hnsw_qps_1_thread']} q/s")
match = next((r for r in ours["runs"] if r["recall_at_10"] >= ref64["recall_at_10"]), None)
print(f"ratio build time lamina/faiss: {ours['build_s'] / ref['build_s']:.2f} (target <= 1)")
print(f"ratio bytes/vector lamina/faiss: {ours['bytes_per_vector'] / ref['bytes_per_vector']:.3f} (target <= 1)")
if match:
    print(
        f"at faiss's recall@10 {ref64['recall_at_10']:.4f} (efSearch 64, {ref64['qps']} q/s): lamina ef_search {match['ef_search']} "
        f"reaches {match['recall_at_10']:.4f} at {match['qps']} q/s: ratio {match['qps'] / ref64['qps']:.2f}x (target >= 1)"
    )
else:
    print(f"lamina reaches no recall@10 >= {ref64['recall_at_10']:.4f} in this sweep: widen --ef-search")
