#!/usr/bin/env bash
# Quick start: train on the embedded corpus, translate its test set with beam 5, print BLEU/chrF.
# Offline, about two minutes on 2 CPU cores. Run from the repository root.
set -euo pipefail
usage() { echo "usage: bash recipes/toy/run.sh [OUT]   (OUT: the model directory, default experiments/toy)"; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) echo "run.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
esac
if [ $# -gt 1 ]; then echo "run.sh: one argument at most, the model directory" >&2; usage >&2; exit 2; fi
out="${1:-experiments/toy}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
# a fresh model each run: an earlier model directory is replaced, anything else is never deleted
if [ -e "$out" ] && { [ ! -d "$out" ] || { [ ! -f "$out/config.yaml" ] && [ -n "$(ls -A "$out")" ]; }; }; then
  echo "run.sh: $out exists and is not a model directory; not replacing it (give another OUT)" >&2
  exit 2
fi
rm -rf "$out"
translate train recipes/toy/config.yaml "out_dir=$out"
translate translate -m "$out" -i data/toy/test.de -o "$out/test.beam5.en" --beam 5
translate score -r data/toy/test.en "$out/test.beam5.en" | tee "$out/test.beam5.score"
echo "model directory: $out  (try: echo 'Der Hund sieht die Katze.' | translate translate -m $out)"
