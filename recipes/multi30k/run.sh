#!/usr/bin/env bash
# Multi30k De->En (or En->De: --src en --tgt de) end to end: data -> SentencePiece -> train ->
# translate test_2016_flickr -> score.
# Every artefact lands under --out; re-running skips the steps already finished.
set -euo pipefail

usage() {
  cat <<USAGE
usage: bash recipes/multi30k/run.sh [--data-dir DIR] [--out DIR] [--config FILE]
       [--src de|en --tgt en|de] [section.key=value ...]

  --data-dir DIR   folder with train/val/test_2016_flickr .de/.en (.gz or plain); default: \$MULTI30K_DIR,
                   else download the raw files of github.com/multi30k/dataset into OUT/data (checked by sha256)
  --out DIR        experiment directory (default: experiments/multi30k; experiments/multi30k-en-de for En->De)
  --config FILE    training config (default: recipes/multi30k/config.yaml)
  --src, --tgt     the direction (default: --src de --tgt en); the config's languages are replaced
  key=value        config overrides passed to 'translate train', e.g. train.max_minutes=10
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib.sh"
data_dir="${MULTI30K_DIR:-}"
out="experiments/multi30k"
config="$here/config.yaml"
languages="de en"
parse_args "$@"

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
if ! data_matches; then
  echo "run.sh: $data_dir is not the published Multi30k; pass the raw files of" >&2
  echo "github.com/multi30k/dataset (data/task1/raw), or train on your data with 'translate train'." >&2
  exit 1
fi
echo "data ok: $data_dir"

train_model val
tune_length_penalty val 0.5,1,1.5,2
translate_and_score test_2016_flickr
