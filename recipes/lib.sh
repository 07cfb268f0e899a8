# The steps every recipe's run.sh shares; sourced by them, not run. A recipe defines usage(),
# sets the defaults of data_dir, out, config and languages (those its data has), calls
# parse_args "$@", gets its data into $data_dir, then calls the steps below. Every step skips
# what an earlier run finished.

text_of() { case "$1" in *.gz) gunzip -c "$1" ;; *) cat "$1" ;; esac; }

find_file() {  # DIR NAME: prints DIR/NAME.gz or DIR/NAME, whichever exists
  if [ -f "$1/$2.gz" ]; then echo "$1/$2.gz"; elif [ -f "$1/$2" ]; then echo "$1/$2"; fi
}

parse_args() {  # sets data_dir, out, config, src, tgt and overrides from the command line;
  # checks the direction against $languages (the recipe's) and makes $out. Without --out, a
  # direction other than the recipe's first (de->en) gets its own folder: $out-SRC-TGT.
  overrides=()
  src=de tgt=en
  local out_given=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --data-dir|--out|--config|--src|--tgt)
        if [ $# -lt 2 ]; then echo "run.sh: $1 needs a value" >&2; usage >&2; exit 2; fi
        case "$1" in
          --data-dir) data_dir="$2" ;;
          --out) out="$2"; out_given=1 ;;
          --config) config="$2" ;;
          --src) src="$2" ;;
          --tgt) tgt="$2" ;;
        esac
        shift 2 ;;
      -h|--help) usage; exit 0 ;;
      data.src_lang=*|data.tgt_lang=*)
        echo "run.sh: give the direction with --src/--tgt, not ${1%%=*}" >&2; usage >&2; exit 2 ;;
      *=*) overrides+=("$1"); shift ;;
      *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
  done
  local lang
  for lang in "$src" "$tgt"; do
    case " $languages " in
      *" $lang "*) ;;
      *) echo "run.sh: this recipe's data has the languages: $languages (got '$lang')" >&2
         usage >&2; exit 2 ;;
    esac
  done
  if [ "$src" = "$tgt" ]; then
    echo "run.sh: --src and --tgt are both '$src'" >&2; usage >&2; exit 2
  fi
  if [ "$out_given" = 0 ] && [ "$src-$tgt" != de-en ]; then out="$out-$src-$tgt"; fi
  mkdir -p "$out"
}

data_matches() {  # true when every file named in SHA256 is in $data_dir with that sha256 of its
  # text (decompressed, so a re-compressed copy still matches); a missing file ends the recipe
  local name file matches=0
  for name in "${!SHA256[@]}"; do
    file="$(find_file "$data_dir" "$name")"
    if [ -z "$file" ]; then
      echo "run.sh: $data_dir has no $name or $name.gz" >&2; exit 1
    fi
    if [ "$(text_of "$file" | sha256sum | cut -d' ' -f1)" != "${SHA256[$name]}" ]; then
      echo "run.sh: $file differs from the file of record (sha256)" >&2
      matches=1
    fi
  done
  return "$matches"
}

train_model() {  # DEV: SentencePiece and training on $data_dir/train, dev split DEV, $src->$tgt
  echo "== 2/5 SentencePiece + training ($src->$tgt)"
  if [ -f "$out/train.done" ]; then
    echo "already trained: $out"
  else
    local start
    start=$(date +%s)
    translate train "$config" "out_dir=$out" "data.train=$data_dir/train" "data.dev=$data_dir/$1" \
      "data.src_lang=$src" "data.tgt_lang=$tgt" ${overrides[@]+"${overrides[@]}"}
    echo "$(( $(date +%s) - start ))" > "$out/train.done"
  fi
  echo "training took $(cat "$out/train.done")s"
}

split_text() {  # SPLIT: $out/SPLIT.$src and $out/SPLIT.ref.$tgt, the split's plain text
  text_of "$(find_file "$data_dir" "$1.$src")" > "$out/$1.$src"
  text_of "$(find_file "$data_dir" "$1.$tgt")" > "$out/$1.ref.$tgt"
}

tune_length_penalty() {  # DEV ALPHAS: the beam-5 length penalty with the best BLEU on DEV
  echo "== 3/5 length penalty for beam 5, chosen on $1"
  if [ ! -f "$out/tune.done" ]; then
    split_text "$1"
    translate tune -m "$out" --src "$out/$1.$src" --ref "$out/$1.ref.$tgt" --beams 5 --alphas "$2"
    touch "$out/tune.done"
  fi
}

translate_and_score() {  # SPLIT: translate it with beam 5 and greedy, then sacreBLEU and chrF
  echo "== 4/5 translate $1"
  split_text "$1"
  local beam hyp
  for beam in 5 1; do
    hyp="$out/$1.beam$beam.$tgt"
    if [ ! -f "$hyp" ]; then
      translate translate -m "$out" --beam "$beam" -i "$out/$1.$src" -o "$hyp"  # written whole
    fi
  done
  echo "== 5/5 score (sacreBLEU, cased, detokenized)"
  for beam in 5 1; do
    echo "-- beam $beam"
    translate score -r "$out/$1.ref.$tgt" "$out/$1.beam$beam.$tgt" | tee "$out/$1.beam$beam.score"
  done
}
