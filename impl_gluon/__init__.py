"""DC-TTS (Text2Mel + SSRN) in MXNet Gluon (HybridBlocks), from the shared spec in common/."""
