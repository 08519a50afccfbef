"""DC-TTS in Chainer 7.8.1, built from common.contract.spec (same weights, same numbers as the NumPy reference)."""
