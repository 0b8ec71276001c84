"""QPS of each system at recall@10 levels 0.90 to 0.99, interpolated (log QPS, linear in
recall) between the sweep points of `omendb bench ann` and hnsw_peers.py JSON lines, and
omendb's ratio to the best peer at each level.
python benches/peers/compare.py omendb.jsonl peers.jsonl"""
import json
import math
import sys

curves = {}
for path in sys.argv[1:]:
    for line in open(path):
        line = line.strip()
        if line.startswith("{") and '"ef"' in line:
            r = json.loads(line)
            curves.setdefault(r["system"], []).append((r["recall"], r["qps"]))


def qps_at(points, target):
    """QPS at `target` recall along the sweep (None when the sweep never reaches it)."""
    points = sorted(points)
    best = None
    for (r0, q0), (r1, q1) in zip(points, points[1:]):
        if r0 <= target <= r1 and r1 > r0:
            t = (target - r0) / (r1 - r0)
            q = math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0)))
            best = q if best is None else max(best, q)
    for r, q in points:
        if r >= target:
            best = q if best is None else max(best, q)
            break
    return best


levels = [0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99]
systems = sorted(curves)
print("recall " + " ".join(f"{s:>12}" for s in systems) + "   omendb/best-peer")
for lv in levels:
    row = {s: qps_at(curves[s], lv) for s in systems}
    peers = [v for s, v in row.items() if not s.startswith("omendb") and v]
    ours = [v for s, v in row.items() if s.startswith("omendb") and v]
    ratio = f"{max(ours) / max(peers):.2f}x" if peers and ours else "-"
    print(f"{lv:.2f}   " + " ".join(f"{(v or 0):12.0f}" for v in row.values()) + f"   {ratio}")
