"""The command lines' handling of bad input: one line on stderr, non-zero exit, no traceback.
Every case here fails before a framework is needed (the successful paths run per framework
in tests/backend_contract.py)."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from common.training import checkpoint as C, cli
from common.data import dataset as data
from common.contract import spec as S, weights as W
from tests.common.test_checkpoint import NumpyBackend, state

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def models(tmp_path):
    """Plain weight files of tiny Text2Mel and SSRN (the CLI reads weights or checkpoints)."""
    tiny = S.get_spec("tiny")
    paths = {net: tmp_path / f"{net}.safetensors" for net in S.NETS}
    for net, path in paths.items():
        W.save(path, W.init_weights(tiny, net), tiny, net)
    return paths


def one_line_error(main, argv, capsys, prog):
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 1, err
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, err
    return err


def synthesize_error(capsys, text, t2m, ssrn, *extra):
    argv = ["--framework", "torch", "--text2mel", str(t2m), "--ssrn", str(ssrn), text, "-o", os.devnull, *extra]
    return one_line_error(cli.synthesize_main, argv, capsys, "dctts-synthesize")


@pytest.mark.parametrize("text, message", [
    ("hello ~world", "unknown characters '~' at position 6 in normalized text 'hello ~world'"),
    ("  ", "empty after normalization"),
    ("la " * 30, "max_chars=60"),
])
def test_synthesize_refuses_bad_text(models, capsys, text, message):
    assert message in synthesize_error(capsys, text, models["text2mel"], models["ssrn"])


def test_synthesize_names_the_option_that_drops_unknown_characters(models, capsys):
    err = synthesize_error(capsys, "Dr. ~Who", models["text2mel"], models["ssrn"])
    assert "'~' at position 7 in normalized text 'doctor ~who'" in err
    assert err.rstrip().endswith("use --drop-unknown to drop them") and "drop_unknown" not in err


def test_synthesize_prints_the_text_it_speaks_and_what_it_dropped(models, capsys):
    """Printed before synthesis: here --max-frames 0 then stops it before a framework is needed."""
    err = synthesize_error(capsys, "Dr. ~Who^ paid $5~", models["text2mel"], models["ssrn"], "--drop-unknown",
                           "--max-frames", "0")
    assert "--max-frames must be >= 1" in err
    # (synthesize_error read the output: run it again for stdout)
    with pytest.raises(SystemExit):
        cli.synthesize_main(["--framework", "torch", "--text2mel", str(models["text2mel"]), "--ssrn",
                             str(models["ssrn"]), "Dr. ~Who^ paid $5~", "-o", os.devnull, "--drop-unknown",
                             "--max-frames", "0"])
    out = capsys.readouterr().out
    assert out == "dropped 3 unknown characters: '~', '^'\n" 'text: "doctor who paid five dollars"\n'


def show_text(capsys, *argv):
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main(["--show-text", *argv])
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def test_show_text_prints_the_normalized_text_without_models(capsys):
    code, out, err = show_text(capsys, "Dr. Smith paid $5 on 12/3, didn't he?")
    assert (code, err) == (0, "")
    assert out == 'text: "doctor smith paid five dollars on december third didn\'t he?"\n'


def test_show_text_does_not_read_the_models_or_check_the_length(tmp_path, capsys):
    code, out, _ = show_text(capsys, "--framework", "torch", "--text2mel", str(tmp_path / "none"), "--ssrn",
                             str(tmp_path / "none"), "la " * 100)
    assert code == 0 and out == f'text: "{"la " * 99}la"\n'


def test_show_text_refuses_unknown_characters_naming_the_option(capsys):
    code, out, err = show_text(capsys, "a ~ b")
    assert code == 1 and out == ""
    assert err.startswith("dctts-synthesize: error: unknown characters '~' at position 2") and err.count("\n") == 1
    assert "use --drop-unknown" in err


def test_show_text_with_drop_unknown_says_what_it_dropped(capsys):
    code, out, _ = show_text(capsys, "--drop-unknown", "a ~ b^")
    assert code == 0 and out == "dropped 2 unknown characters: '~', '^'\n" 'text: "a b"\n'
    assert show_text(capsys, "--drop-unknown", "a~")[1].startswith("dropped 1 unknown character: '~'\n")


def test_synthesize_needs_models_and_an_output_unless_show_text(models, capsys):
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main(["--framework", "torch", "--text2mel", str(models["text2mel"]), "hi"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "required (all but --show-text): --ssrn, -o/--output" in err
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main(["hi"])
    assert done.value.code == 2 and "--framework, --text2mel, --ssrn, -o/--output" in capsys.readouterr().err


def test_synthesize_refuses_bad_model_files(models, tmp_path, capsys):
    t2m, ssrn = models["text2mel"], models["ssrn"]
    assert "no such weight file" in synthesize_error(capsys, "hi", tmp_path / "nope.safetensors", ssrn)
    assert "holds ssrn weights, not text2mel" in synthesize_error(capsys, "hi", ssrn, ssrn)
    (tmp_path / "run").mkdir()
    assert "no text2mel checkpoint in this directory" in synthesize_error(capsys, "hi", tmp_path / "run", ssrn)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(t2m.read_bytes()[:500])
    assert "truncated or corrupt" in synthesize_error(capsys, "hi", broken, ssrn)


def test_synthesize_refuses_models_that_disagree_on_audio(models, tmp_path, capsys):
    other = S.get_spec("tiny", n_mels=8, sr=16000)
    path = tmp_path / "other-ssrn.safetensors"
    W.save(path, W.init_weights(other, "ssrn"), other, "ssrn")
    err = synthesize_error(capsys, "hi", models["text2mel"], path)
    assert "disagree on audio fields: sr (text2mel 8000, ssrn 16000), n_mels (text2mel 16, ssrn 8)" in err


def test_synthesize_refuses_zero_frames(models, capsys):
    assert "--max-frames must be >= 1" in synthesize_error(capsys, "hi", models["text2mel"], models["ssrn"],
                                                           "--max-frames", "0")


def train_error(capsys, data, out, *extra):
    argv = ["--framework", "torch", "--model", "ssrn", "--data", str(data), "--out", str(out), "--quiet", *extra]
    return one_line_error(cli.train_main, argv, capsys, "dctts-train")


def test_train_refuses_bad_data_dirs(tmp_path, capsys):
    assert "does not exist" in train_error(capsys, tmp_path / "nowhere", tmp_path / "run")
    (tmp_path / "corpus").mkdir()
    assert "metadata.csv is missing" in train_error(capsys, tmp_path / "corpus", tmp_path / "run")


def test_train_refuses_bad_numbers_and_conflicting_runs(tmp_path, capsys):
    assert "steps must be >= 1, got 0" in train_error(capsys, tmp_path, tmp_path / "r", "--steps", "0")
    C.save(tmp_path / "run", NumpyBackend(S.get_spec("tiny"), "ssrn"), state(3))
    assert "already holds ssrn checkpoints" in train_error(capsys, tmp_path, tmp_path / "run", "--no-resume")
    err = train_error(capsys, tmp_path, tmp_path / "run", "--preset", "small")
    assert "other hyperparameters: e (model 32, file 8), d (model 64, file 16)" in err
    assert "the run used seed=5, not 1" in train_error(capsys, tmp_path, tmp_path / "run", "--seed", "1")


def test_train_set_changes_the_presets_hyperparameters_and_refuses_bad_ones(tmp_path, capsys):
    C.save(tmp_path / "run", NumpyBackend(S.get_spec("tiny"), "ssrn"), state(3))
    err = train_error(capsys, tmp_path, tmp_path / "run", "--preset", "tiny", "--set", "d=32", "--set", "conv=sep")
    assert "other hyperparameters: d (model 32, file 16), conv (model 'sep', file 'none')" in err
    assert "expected FIELD=VALUE with FIELD one of" in train_error(capsys, tmp_path, tmp_path / "r", "--set", "depth=3")
    assert "norm='instance' is not one of" in train_error(capsys, tmp_path, tmp_path / "r", "--set", "norm=instance")


def test_only_input_errors_are_one_line_a_bug_keeps_its_traceback(capsys):
    def bad_input(args):
        raise cli.EspeakError("espeak-ng is not installed")

    def bug(args):
        raise RuntimeError("CUDA error: an illegal memory access")

    assert cli._guarded("dctts-train", bad_input, None) == cli.EXIT_ERROR
    assert capsys.readouterr().err == "dctts-train: error: espeak-ng is not installed\n"
    with pytest.raises(RuntimeError, match="illegal memory access"):
        cli._guarded("dctts-train", bug, None)


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as done:
        cli.train_main(["--framework", "theano", "--model", "ssrn", "--data", "d", "--out", "o"])
    assert done.value.code == 2 and "invalid choice: 'theano'" in capsys.readouterr().err


def test_python_m_entry_point():
    ok = subprocess.run([sys.executable, "-m", "common.training.cli", "synthesize", "--help"], capture_output=True,
                        text=True, cwd=ROOT)
    assert ok.returncode == 0 and all(o in ok.stdout for o in ("--text2mel", "--max-frames", "--show-text"))
    bad = subprocess.run([sys.executable, "-m", "common.training.cli", "speak"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "train|synthesize" in bad.stderr and "Traceback" not in bad.stderr


def test_a_run_directory_gives_its_newest_readable_checkpoint(tmp_path):
    tiny = S.get_spec("tiny")
    for step in (1, 2):
        C.save(tmp_path, NumpyBackend(tiny, "ssrn", seed=step), state(step))
    newest = C.path_for(tmp_path, "ssrn", 2)
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="skipped ssrn-00000002.safetensors"):
        weights, spec = cli.read_model(tmp_path, "ssrn")
    assert spec == tiny and np.array_equal(weights["ssrn.0.weight"], W.init_weights(tiny, "ssrn", 1)["ssrn.0.weight"])


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--batch-size", "-4"], "batch_size must be >= 1, got -4"),
    (["--steps", "-1"], "steps must be >= 1, got -1"),
    (["--checkpoint-every", "0"], "checkpoint_every must be >= 1, got 0"),
    (["--threads", "0"], "threads must be >= 1, got 0"),
    (["--seed", "-1"], "seed must be >= 0, got -1"),
    (["--steps", "0", "--seed", "-2"], "steps must be >= 1, got 0; seed must be >= 0, got -2"),
])
def test_train_checks_every_argument_before_any_work(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr(data, "load_corpus", lambda *a, **k: pytest.fail("the corpus was loaded"))
    assert message in train_error(capsys, tmp_path, tmp_path / "run", *extra)
    assert not (tmp_path / "run").exists()


def test_train_refuses_an_output_that_is_a_file(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "run").write_text("")
    assert "is not a directory" in train_error(capsys, tmp_path / "corpus", tmp_path / "run")


def test_train_cache_option_defaults_to_the_environment(monkeypatch):
    argv = ["--framework", "torch", "--model", "ssrn", "--data", "d", "--out", "o"]
    monkeypatch.delenv("DCTTS_CACHE", raising=False)
    assert cli.train_parser().parse_args(argv).cache is None
    monkeypatch.setenv("DCTTS_CACHE", "/somewhere/caches")
    assert cli.train_parser().parse_args(argv).cache == Path("/somewhere/caches")
    assert cli.train_parser().parse_args(argv + ["--cache", "mine"]).cache == Path("mine")


def test_train_refuses_an_unwritable_output_before_any_work(tmp_path, capsys, monkeypatch):
    real = data.unwritable
    monkeypatch.setattr(data, "unwritable", lambda p: "permission denied on /x" if "run" in str(p) else real(p))
    monkeypatch.setattr(data, "load_corpus", lambda *a, **k: pytest.fail("the corpus was loaded"))
    assert "cannot write to output" in train_error(capsys, tmp_path, tmp_path / "run")


def test_check_writable_refuses_outputs_that_cannot_be_written(tmp_path, monkeypatch):
    cli.check_writable(tmp_path / "new" / "dir" / "x.wav")  # folders are made later
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"cannot write .*x\.wav: .*file is not a directory"):
        cli.check_writable(tmp_path / "file" / "x.wav")
    with pytest.raises(OSError, match="is a directory"):
        cli.check_writable(tmp_path)
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # chmod a-w (not as root)
    with pytest.raises(OSError, match="permission denied"):
        cli.check_writable(tmp_path / "x.wav")


def test_warnings_are_one_line_each(capsys):
    def run(args):
        warnings.warn("skipped 2 of 4:\n  details")
        return 0

    assert cli._guarded("dctts-train", run, None) == 0
    assert capsys.readouterr().err == "dctts-train: warning: skipped 2 of 4: details\n"


def test_synthesize_refuses_an_unwritable_output_before_synthesis(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_backend", lambda fw: pytest.fail("synthesis started before the output was checked"))
    (tmp_path / "file").write_text("")
    for output, reason in ((tmp_path / "file" / "x.wav", "is not a directory"), (tmp_path, "is a directory")):
        argv = ["--framework", "torch", "--text2mel", str(models["text2mel"]), "--ssrn", str(models["ssrn"]),
                "hello", "-o", str(output)]
        assert reason in one_line_error(cli.synthesize_main, argv, capsys, "dctts-synthesize")


def test_several_texts_need_a_folder_and_each_bad_text_is_named(models, tmp_path, capsys):
    base = ["--framework", "torch", "--text2mel", str(models["text2mel"]), "--ssrn", str(models["ssrn"])]
    (tmp_path / "taken.wav").write_text("")
    err = one_line_error(cli.synthesize_main, [*base, "one", "two", "-o", str(tmp_path / "taken.wav")], capsys,
                         "dctts-synthesize")
    assert "cannot write 2 wavs into" in err and "it is a file" in err
    lines = tmp_path / "lines.txt"
    lines.write_text("fine words\n\n  \nhello ~world\n")
    err = one_line_error(cli.synthesize_main, [*base, "first", "--text-file", str(lines), "-o", str(tmp_path / "o")],
                         capsys, "dctts-synthesize")
    assert "text 3: unknown characters '~' at position 6" in err  # blank lines are skipped
    lines.write_bytes(b"caf\xe9\n")
    err = one_line_error(cli.synthesize_main, [*base, "--text-file", str(lines), "-o", str(tmp_path / "o")], capsys,
                         "dctts-synthesize")
    assert "not UTF-8 text" in err
    err = one_line_error(cli.synthesize_main, [*base, "--text-file", str(tmp_path / "none.txt"), "-o",
                                               str(tmp_path / "o")], capsys, "dctts-synthesize")
    assert "none.txt" in err
    err = one_line_error(cli.synthesize_main, [*base, "hi", "-o", str(tmp_path / "x.wav"), "--batch-size", "0"],
                         capsys, "dctts-synthesize")
    assert "--batch-size must be >= 1" in err


def test_no_text_at_all_is_a_usage_error(models, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(SystemExit) as done:
        cli.synthesize_main(["--show-text", "--text-file", str(tmp_path / "empty.txt")])
    assert done.value.code == 2 and "no text given" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--stream", "--text-file", __file__], "--stream speaks one text, got "),
    (["--stream", "--chunk", "0"], "the chunk size must be a whole number of frames >= 1, got 0"),
    (["--chunk", "4"], "--chunk goes with --stream"),
])
def test_synthesize_refuses_bad_streaming_options_before_loading_a_framework(models, capsys, monkeypatch, extra,
                                                                             message):
    monkeypatch.setattr(cli, "load_backend", lambda fw: pytest.fail("a framework was loaded"))
    assert message in synthesize_error(capsys, "one", models["text2mel"], models["ssrn"], *extra)


def test_raw_pcm_on_stdout_goes_with_stream(models, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_backend", lambda fw: pytest.fail("a framework was loaded"))
    argv = ["--framework", "torch", "--text2mel", str(models["text2mel"]), "--ssrn", str(models["ssrn"]), "one",
            "-o", "-"]
    assert "-o - (raw PCM on stdout) goes with --stream" in one_line_error(cli.synthesize_main, argv, capsys,
                                                                          "dctts-synthesize")
