#!/usr/bin/env bash
# Multi30k De->En end to end: data -> SentencePiece -> train -> translate test_2016_flickr -> score.
# Every artefact lands under --out; re-running skips the steps already finished.
set -euo pipefail

usage() {
  cat <<USAGE
usage: bash recipes/multi30k/run.sh [--data-dir DIR] [--out DIR] [--config FILE] [section.key=value ...]

  --data-dir DIR   folder with train/val/test_2016_flickr .de/.en (.gz or plain); default: \$MULTI30K_DIR,
                   else download the raw files of github.com/multi30k/dataset into OUT/data (checked by sha256)
  --out DIR        experiment directory (default: experiments/multi30k)
  --config FILE    training config (default: recipes/multi30k/config.yaml)
  key=value        config overrides passed to 'translate train', e.g. train.max_minutes=10
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data_dir="${MULTI30K_DIR:-}"
out="experiments/multi30k"
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

# sha256 of the decompressed text, so a re-compressed mirror still matches
declare -A SHA256=(
  [train.de]=2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72
  [train.en]=460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6
  [val.de]=660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660
  [val.en]=1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227
  [test_2016_flickr.de]=4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16
  [test_2016_flickr.en]=399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182
)
URL="https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"

text_of() { case "$1" in *.gz) gunzip -c "$1" ;; *) cat "$1" ;; esac; }

find_file() {  # prints DIR/NAME.gz or DIR/NAME, whichever exists
  if [ -f "$1/$2.gz" ]; then echo "$1/$2.gz"; elif [ -f "$1/$2" ]; then echo "$1/$2"; fi
}

echo "== 1/5 data"
if [ -z "$data_dir" ]; then
  data_dir="$out/data"
  mkdir -p "$data_dir"
  for name in "${!SHA256[@]}"; do
    [ -n "$(find_file "$data_dir" "$name")" ] && continue
    echo "downloading $name.gz"
    if ! curl -fsSL --retry 2 -o "$data_dir/$name.gz.part" "$URL/$name.gz"; then
      echo "run.sh: cannot download $URL/$name.gz (offline?)." >&2
      echo "Get the six files elsewhere and pass --data-dir DIR (or set MULTI30K_DIR)." >&2
      exit 1
    fi
    mv "$data_dir/$name.gz.part" "$data_dir/$name.gz"
  done
fi
for name in "${!SHA256[@]}"; do
  file="$(find_file "$data_dir" "$name")"
  if [ -z "$file" ]; then
    echo "run.sh: $data_dir has no $name or $name.gz" >&2; exit 1
  fi
  if [ "$(text_of "$file" | sha256sum | cut -d' ' -f1)" != "${SHA256[$name]}" ]; then
    echo "run.sh: $file does not match the published Multi30k file (sha256 differs)" >&2; exit 1
  fi
done
echo "data ok: $data_dir"

echo "== 2/5 SentencePiece + training"
if [ -f "$out/train.done" ]; then
  echo "already trained: $out/model.pt"
else
  start=$(date +%s)
  translate train "$config" "out_dir=$out" "data.train=$data_dir/train" "data.dev=$data_dir/val" \
    ${overrides[@]+"${overrides[@]}"}
  echo "$(( $(date +%s) - start ))" > "$out/train.done"
fi
echo "training took $(cat "$out/train.done")s"

echo "== 3/5 length penalty for beam 5, chosen on the dev set (val)"
if [ ! -f "$out/tune.done" ]; then
  translate tune -m "$out" --src "$(find_file "$data_dir" val.de)" \
    --ref "$(find_file "$data_dir" val.en)" --beams 5 --alphas 0.5,1,1.5,2
  touch "$out/tune.done"
fi

echo "== 4/5 translate test_2016_flickr"
test_src="$(find_file "$data_dir" test_2016_flickr.de)"
test_ref="$(find_file "$data_dir" test_2016_flickr.en)"
for beam in 5 1; do
  hyp="$out/test_2016_flickr.beam$beam.en"
  if [ ! -f "$hyp" ]; then
    text_of "$test_src" | translate translate -m "$out" --beam "$beam" -o "$hyp"
  fi
done

echo "== 5/5 score (sacreBLEU, cased, detokenized)"
text_of "$test_ref" > "$out/test_2016_flickr.ref.en"
for beam in 5 1; do
  echo "-- beam $beam"
  translate score -r "$out/test_2016_flickr.ref.en" "$out/test_2016_flickr.beam$beam.en" \
    | tee "$out/test_2016_flickr.beam$beam.score"
done
