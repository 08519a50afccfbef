"""Text, audio and corpora: from characters and wavs to the batches every framework trains on."""
