#!/usr/bin/env bash
# Tatoeba De->En end to end, the general-domain recipe: data -> SentencePiece -> train ->
# tune the length penalty on valid -> translate valid -> score. Every artefact lands under
# --out; re-running skips the steps already finished.
set -euo pipefail

usage() {
  cat <<USAGE
usage: bash recipes/tatoeba/run.sh [--data-dir DIR] [--out DIR] [--config FILE] [section.key=value ...]

  --data-dir DIR   folder with train and valid .de/.en files (.gz or plain); default: \$TATOEBA_DIR,
                   else download manythings.org's deu-eng.zip (Tatoeba, CC-BY 2.0) into OUT/data
                   and split it with recipes/tatoeba/split.py
  --out DIR        experiment directory (default: experiments/tatoeba)
  --config FILE    training config (default: recipes/tatoeba/config.yaml)
  key=value        config overrides passed to 'translate train', e.g. train.max_minutes=20
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data_dir="${TATOEBA_DIR:-}"
out="experiments/tatoeba"
config="$here/config.yaml"
overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
mkdir -p "$out"

# sha256 of the decompressed text of the split the README's figures come from: the export of
# 2018-05-13, split by grouping pairs that share a sentence (no valid sentence is in train)
declare -A SHA256=(
  [train.de]=053e03e47f76319131c3bf3ed4bda8fa814d82cbdf55b6a93fdb90db9a7ac948
  [train.en]=e25ac90fb93199e99da0feedb0fd27cbd54852fd98d693d4b689cb60dccf8fec
  [valid.de]=45b889f40ca6ddf33094b0066365ba5b4bd841c78a443d1a16a1d4ca3cb196fa
  [valid.en]=3ffba96bbdf9cb0930a0929cea6f026532d946b89c228786e7f239112562bc76
)
URL="https://www.manythings.org/anki/deu-eng.zip"

text_of() { case "$1" in *.gz) gunzip -c "$1" ;; *) cat "$1" ;; esac; }

find_file() {  # prints DIR/NAME.gz or DIR/NAME, whichever exists
  if [ -f "$1/$2.gz" ]; then echo "$1/$2.gz"; elif [ -f "$1/$2" ]; then echo "$1/$2"; fi
}

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
of_record=yes
for name in "${!SHA256[@]}"; do
  file="$(find_file "$data_dir" "$name")"
  if [ -z "$file" ]; then
    echo "run.sh: $data_dir has no $name or $name.gz" >&2; exit 1
  fi
  if [ "$(text_of "$file" | sha256sum | cut -d' ' -f1)" != "${SHA256[$name]}" ]; then
    of_record=no
  fi
done
if [ "$of_record" = yes ]; then
  echo "data ok: $data_dir (the 2018-05-13 split the README's figures come from)"
else
  echo "data: $data_dir is not the split the README's figures come from; BLEU will differ" >&2
fi

echo "== 2/5 SentencePiece + training"
if [ -f "$out/train.done" ]; then
  echo "already trained: $out/model.pt"
else
  start=$(date +%s)
  translate train "$config" "out_dir=$out" "data.train=$data_dir/train" "data.dev=$data_dir/valid" \
    ${overrides[@]+"${overrides[@]}"}
  echo "$(( $(date +%s) - start ))" > "$out/train.done"
fi
echo "training took $(cat "$out/train.done")s"

valid_src="$(find_file "$data_dir" valid.de)"
valid_ref="$(find_file "$data_dir" valid.en)"
text_of "$valid_ref" > "$out/valid.ref.en"

echo "== 3/5 length penalty for beam 5, chosen on valid"
if [ ! -f "$out/tune.done" ]; then
  text_of "$valid_src" > "$out/valid.de"
  translate tune -m "$out" --src "$out/valid.de" --ref "$out/valid.ref.en" --beams 5 --alphas 0.5,1,1.5
  touch "$out/tune.done"
fi

echo "== 4/5 translate valid"
for beam in 5 1; do
  hyp="$out/valid.beam$beam.en"
  if [ ! -f "$hyp" ]; then
    text_of "$valid_src" | translate translate -m "$out" --beam "$beam" -o "$hyp"
  fi
done

echo "== 5/5 score (sacreBLEU, cased, detokenized)"
for beam in 5 1; do
  echo "-- beam $beam"
  translate score -r "$out/valid.ref.en" "$out/valid.beam$beam.en" | tee "$out/valid.beam$beam.score"
done
