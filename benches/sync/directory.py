"""Writes COUNT directory records as JSON Lines to PATH (benches/sync/*.sh): ten categories
for each of COUNT/10 Ningbo townships, version 1, owned by Ningbo 12345. In key order, or in a
random order (the same each time) when a third argument says `shuffled`."""
import json, random, sys

count, path = int(sys.argv[1]), sys.argv[2]
order = list(range(count))
if len(sys.argv) > 3 and sys.argv[3] == "shuffled":
    random.Random(15).shuffle(order)
categories = ["NP01", "NP02", "NP03", "NP04", "NP05", "NP06", "NP07", "NP08", "NP09", "NP10"]
with open(path, "w") as out:
    for n in order:
        region = "3302%05d" % (n // 10)
        key = f"{region}/{categories[n % 10]}"
        out.write(json.dumps({"key": key, "owner": "330200/12345", "version": 1, "updated_at": "2026-11-28T08:00:00+08:00",
                              "body": {"unit": {"code": key, "name": "宁波市某镇综合执法队"}, "phone": "0574-87000000",
                                       "hours": "8:30-17:00"}}, ensure_ascii=False) + "\n")
