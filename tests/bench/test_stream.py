"""The streaming task (bench/stream.py): a smoke run at `tiny`, its sentences, tables and verdicts."""
import json

import pytest

from bench import machine, run, stream
from common.contract.spec import get_spec
from common.data import text


def test_stream_smoke_run_writes_table_plot_and_records(tmp_path):
    out = tmp_path / "stream"
    assert run.main(["--task", "stream", "--framework", "torch", "--preset", "tiny", "--threads", "1",
                     "--out", str(out)]) == 0
    result = json.loads((out / "stream.json").read_text())
    (record,) = result["records"]
    assert record["status"] == "ok" and record["gate"]["ssrn"]["passed"]
    for entry in record["sentences"].values():
        assert set(entry["stream"]) == {str(c) for c in stream.CHUNKS}
        for s in entry["stream"].values():  # every stream delivers the offline audio, the first piece first
            assert s["audio_s"] == pytest.approx(entry["offline"]["audio_s"])
            assert 0 < s["first_audio_s"] <= s["total_s"] and s["curve"][-1][1] == pytest.approx(s["audio_s"])
    table = (out / "stream.md").read_text()
    assert table.count("| torch | short") == 1 + len(stream.CHUNKS) and "- torch: first audio within 10%" in table
    assert len(result["vocoder_quality"]) == 2 * len(stream.CHUNKS) and (out / "stream.png").stat().st_size > 0


def test_the_sentences_are_the_embedded_ones_nearest_40_and_150_characters():
    chosen = stream.sentences(get_spec("demo"))
    assert abs(len(text.normalize(chosen["short"])) - 40) <= 3 and abs(len(text.normalize(chosen["long"])) - 150) <= 5


def fake(framework, rnd, first, stall, offline=1.0):
    streams = {str(c): {"first_audio_s": first, "total_s": 2.0, "audio_s": 4.0, "max_gap_s": 0.1, "stall_s": stall,
                        "real_time_factor": 0.5, "text2mel_s": 1.0, "ssrn_s": 0.5, "vocoder_s": 0.5,
                        "curve": [[first, 1.0], [2.0, 4.0]]} for c in stream.CHUNKS}
    sentence = {"text": "x", "chars": 150, "offline": {"latency_s": offline, "text2mel_s": 0.5, "ssrn_s": 0.1,
                                                        "vocoder_s": 0.4, "audio_s": 4.0, "frames": 90},
                "stream": streams}
    return {"framework": framework, "status": "ok", "round": rnd, "sentences": {"long": sentence}}


def test_the_verdicts_name_the_chunks_that_meet_the_target_and_the_streams_that_ran_dry(tmp_path):
    args = run.parse_args(["--task", "stream", "--framework", "torch", "chainer", "--out", str(tmp_path)])
    args.machine = machine.machine(args.device)  # as run.main reads it
    records = [fake("torch", 0, 0.05, 0.0), fake("torch", 1, 0.07, 0.0), fake("chainer", 0, 0.2, 0.3),
               {"framework": "gluon", "status": "error", "round": 0, "reason": "boom"}]
    table = stream.markdown(args, records, [])
    assert "- torch: first audio within 10% of the long sentence's offline latency at chunk 1, 4, 16; never ran dry" in table
    assert "- chainer: first audio within 10% of the long sentence's offline latency at chunk none; ran dry: long at 1" in table
    assert "| torch | long (150, 90) | 1 | 60 | 6.0% | 0.50 | 100 | 0 | 50% / 25% / 25% |" in table  # medians of 2 rounds
    assert "- FAILED gluon round 0: boom" in table
    stream.plot(tmp_path / "p.png", records, ["torch", "chainer", "gluon"])
    assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [(["--task", "stream", "train-ssrn"], "--task stream runs alone"),
                                            (["--task", "stream", "--ops", "stock"], "stream runs it")])
def test_stream_task_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        run.parse_args(argv)
    assert message in capsys.readouterr().err
    args = run.parse_args(["--task", "stream"])
    assert args.preset == "demo" and args.ops == ["tuned"] and args.out.name.startswith("stream-")
