"""Streaming synthesis: audio while the sentence is still being decoded. Text2Mel hands over its
frames a chunk at a time (Backend.synthesize_stream), SSRN runs on each chunk with the history and
look-ahead its receptive field needs (chunks.py: exactly the offline magnitudes), Griffin-Lim turns
magnitudes into samples as they come (vocoder.py), and pipeline.py ties the three together and clocks
them; output.py writes the samples as they are produced."""
