"""Split a Tatoeba German-English export into train and valid, keeping every sentence on one
side of the split: pairs that share a German or an English sentence form one group, and a
group goes to valid when the hash of its first sentence says so (about 2%).

    python recipes/tatoeba/split.py deu.txt OUT_DIR

deu.txt is the tab-separated file of manythings.org's deu-eng.zip (English, German,
attribution). Writes OUT_DIR/train.de, train.en, valid.de, valid.en in the export's order.
Standard library only.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

VALID_SHARE = 50  # one group in 50 goes to valid


def find(parent: dict[str, str], item: str) -> str:
    while parent.setdefault(item, item) != item:
        parent[item] = parent[parent[item]]  # path halving
        item = parent[item]
    return item


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    pairs = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise SystemExit(f"{source}: line {number} has no tab between English and German")
        pairs.append((fields[1].strip(), fields[0].strip()))  # (German, English)
    parent: dict[str, str] = {}
    for de, en in pairs:
        parent[find(parent, "de:" + de)] = find(parent, "en:" + en)
    first: dict[str, str] = {}  # each group's first sentence in the export's order
    for de, _ in pairs:
        first.setdefault(find(parent, "de:" + de), de)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        name: open(out / name, "w", encoding="utf-8")
        for name in ("train.de", "train.en", "valid.de", "valid.en")
    }
    for de, en in pairs:
        key = first[find(parent, "de:" + de)].encode("utf-8")
        split = "valid" if int(hashlib.sha256(key).hexdigest(), 16) % VALID_SHARE == 0 else "train"
        files[f"{split}.de"].write(de + "\n")
        files[f"{split}.en"].write(en + "\n")
    for f in files.values():
        f.close()


if __name__ == "__main__":
    main()
