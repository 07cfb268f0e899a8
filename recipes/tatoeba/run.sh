#!/usr/bin/env bash
# Tatoeba De->En (or En->De: --src en --tgt de) end to end, the general-domain recipe: data ->
# SentencePiece -> train -> tune the length penalty on valid -> translate valid -> score. Every
# artefact lands under --out; re-running skips the steps already finished.
set -euo pipefail

usage() {
  cat <<USAGE
usage: bash recipes/tatoeba/run.sh [--data-dir DIR] [--out DIR] [--config FILE]
       [--src de|en --tgt en|de] [section.key=value ...]

  --data-dir DIR   folder with train and valid .de/.en files (.gz or plain); default: \$TATOEBA_DIR,
                   else download manythings.org's deu-eng.zip (Tatoeba, CC-BY 2.0) into OUT/data
                   and split it with recipes/tatoeba/split.py
  --out DIR        experiment directory (default: experiments/tatoeba; experiments/tatoeba-en-de for En->De)
  --config FILE    training config (default: recipes/tatoeba/config.yaml)
  --src, --tgt     the direction (default: --src de --tgt en); the config's languages are replaced
  key=value        config overrides passed to 'translate train', e.g. train.max_minutes=20
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib.sh"
data_dir="${TATOEBA_DIR:-}"
out="experiments/tatoeba"
config="$here/config.yaml"
languages="de en"
parse_args "$@"

# sha256 of the decompressed text of the split the README's figures come from: the export of
# 2018-05-13, split by grouping pairs that share a sentence (no valid sentence is in train)
declare -A SHA256=(
  [train.de]=053e03e47f76319131c3bf3ed4bda8fa814d82cbdf55b6a93fdb90db9a7ac948
  [train.en]=e25ac90fb93199e99da0feedb0fd27cbd54852fd98d693d4b689cb60dccf8fec
  [valid.de]=45b889f40ca6ddf33094b0066365ba5b4bd841c78a443d1a16a1d4ca3cb196fa
  [valid.en]=3ffba96bbdf9cb0930a0929cea6f026532d946b89c228786e7f239112562bc76
)
URL="https://www.manythings.org/anki/deu-eng.zip"

echo "== 1/5 data"
if [ -z "$data_dir" ]; then
  data_dir="$out/data"
  if [ ! -f "$data_dir/train.de" ]; then
    mkdir -p "$data_dir"
    echo "downloading $URL (Tatoeba sentences, CC-BY 2.0: https://tatoeba.org)"
    if ! curl -fsSL --retry 2 -A "translate-recipe" -o "$data_dir/deu-eng.zip.part" "$URL"; then
      echo "run.sh: cannot download $URL (offline?)." >&2
      echo "Get it elsewhere, unzip deu.txt, run 'python $here/split.py deu.txt DIR' and pass --data-dir DIR" >&2
      echo "(or set TATOEBA_DIR)." >&2
      exit 1
    fi
    mv "$data_dir/deu-eng.zip.part" "$data_dir/deu-eng.zip"
    (cd "$data_dir" && unzip -o -q deu-eng.zip deu.txt)
    python3 "$here/split.py" "$data_dir/deu.txt" "$data_dir"
  fi
fi
if data_matches; then
  echo "data ok: $data_dir (the 2018-05-13 split the README's figures come from)"
else
  echo "data: $data_dir is not the split the README's figures come from; BLEU will differ" >&2
fi

train_model valid
tune_length_penalty valid 0.5,1,1.5
translate_and_score valid
