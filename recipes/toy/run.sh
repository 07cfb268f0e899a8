#!/usr/bin/env bash
# Quick start: train on the embedded corpus, translate its test set with beam 5, print BLEU/chrF.
# Offline, about two minutes on 2 CPU cores. Run from the repository root.
set -euo pipefail
out="${1:-experiments/toy}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
rm -rf "$out"
translate train recipes/toy/config.yaml "out_dir=$out"
translate translate -m "$out" -i data/toy/test.de -o "$out/test.beam5.en" --beam 5
translate score -r data/toy/test.en "$out/test.beam5.en" | tee "$out/test.beam5.score"
echo "model directory: $out  (try: echo 'Der Hund sieht die Katze.' | translate translate -m $out)"
