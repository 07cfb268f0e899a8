"""The encoder-decoder: the sequence-to-sequence model, its recurrent layers, attention,
dropout and the training loss."""
