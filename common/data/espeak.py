"""espeak-ng as a library, from the pinned `espeakng-loader` wheel: speech for the test and
demo corpora with nothing installed from the system (no `apt-get install espeak-ng`), and
the same espeak-ng (1.52) on every machine, so the same sentence gives the same samples
everywhere.

The wheel ships libespeak-ng and its data only; this module calls the C API (speak_lib.h)
through ctypes in synchronous mode: espeak_Synth returns once the whole text is spoken,
its samples handed to a callback. espeak-ng keeps state between sentences in static
variables (pitch flutter, noise) that no call resets, so each sentence gets a freshly
loaded library: then a sentence sounds the same whatever was spoken before it (7 ms).
"""
from __future__ import annotations

import _ctypes
import ctypes
import threading

import numpy as np

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8, _ENDPAUSE = 0x1, 0x1000
_RATE, _VOLUME, _PITCH = 1, 2, 3
_EE_OK = 0
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# A fixed voice, speed (words per minute), pitch and amplitude (the espeak-ng command line's
# -v en-us -s 160 -p 50 -a 100), and a fixed seed for its noise sources.
VOICE, RATE, PITCH, VOLUME, SEED = "en-us", 160, 50, 100, 0
_lock = threading.Lock()  # the library is one global state


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or refused a call."""


def _paths() -> tuple:
    try:
        import espeakng_loader
    except ImportError as err:
        raise EspeakError("the espeakng-loader package (which ships espeak-ng) is missing; install the project "
                          "with `pip install -c constraints.txt -e .`") from err
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _check(code: int, what: str) -> None:
    if code != _EE_OK:
        raise EspeakError(f"espeak-ng refused {what} (error {code})")


def speak(sentence: str) -> tuple:
    """(int16 samples, sample rate) of `sentence` spoken by espeak-ng."""
    library, data_path = _paths()
    chunks = []

    def collect(samples, n, events) -> int:
        if samples and n > 0:
            chunks.append(np.ctypeslib.as_array(samples, shape=(n,)).copy())
        return 0  # go on

    callback, text = _CALLBACK(collect), sentence.encode("utf-8")
    with _lock:
        lib = ctypes.CDLL(library)
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
            if sr <= 0:
                raise EspeakError(f"espeak_Initialize failed (returned {sr}) with data in {data_path}")
            try:
                lib.espeak_SetSynthCallback(callback)
                lib.espeak_ng_SetRandSeed(ctypes.c_long(SEED))
                _check(lib.espeak_SetVoiceByName(VOICE.encode()), f"voice {VOICE!r}")
                for param, value in ((_RATE, RATE), (_PITCH, PITCH), (_VOLUME, VOLUME)):
                    _check(lib.espeak_SetParameter(param, value, 0), f"parameter {param}={value}")
                _check(lib.espeak_Synth(text, len(text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE,
                                        None, None), f"text {sentence[:40]!r}")
                _check(lib.espeak_Synchronize(), "synchronize")
            finally:
                lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)  # unloaded: the next sentence starts from fresh static state
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)), sr
