"""DC-TTS (Text2Mel + SSRN) in PyTorch, built from the layer lists of common.contract.spec."""
