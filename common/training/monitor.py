"""What a person looks at while a run trains: at each checkpoint, plots (and for Text2Mel a
sound) of one fixed utterance of the corpus, written under the run directory."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data import audio, dataset as data
from common.training import plots
from common.contract.synthesis import reached_end


class Monitor:
    """At each checkpoint, pictures (and for Text2Mel a sound) of one fixed utterance."""

    def __init__(self, backend, corpus, index: int, out_dir: Path):
        self.backend, self.spec, self.out_dir = backend, backend.spec, out_dir
        self.batch = next(data.batches(corpus, [index], 1, np.random.default_rng(0)))
        self.ids = corpus.items[index].ids

    def write(self, step: int) -> None:
        net, b, plot_dir = self.backend.net, self.batch, self.out_dir / "plots"
        out = self.backend.forward(b)
        pred = 1.0 / (1.0 + np.exp(-out["logits"][0]))
        name = f"{net}-{step:08d}"
        if net == "ssrn":
            plots.compare(plot_dir / f"{name}-mag.png", pred, b.mag[0], f"SSRN step {step}", "frequency bin")
            return
        n, t = b.text_lengths[0], b.frame_lengths[0]
        plots.attention(plot_dir / f"{name}-attention.png", out["attention"][0, :n, :t],
                        f"Text2Mel attention (teacher forced), step {step}")
        plots.compare(plot_dir / f"{name}-mel.png", pred[:, :t], b.mel[0, :, :t], f"Text2Mel step {step}", "mel band")
        mel, a = self.backend.synthesize(self.ids, self.spec.max_frames)
        plots.attention(plot_dir / f"{name}-synthesis-attention.png", a,
                        f"synthesis attention, step {step}" + ("" if reached_end(int(a[:, -1].argmax()), len(self.ids))
                                                               else " (did not reach the end)"))
        (self.out_dir / "samples").mkdir(parents=True, exist_ok=True)
        wav = audio.mag_to_wav(audio.mel_to_mag(mel, self.spec), self.spec)
        audio.save_wav(self.out_dir / "samples" / f"{name}.wav", wav, self.spec)
