"""From raw parallel text to training batches: reading corpora, SentencePiece vocabularies,
preparing Arrow shards, the memory-mapped training set and padded batches."""
