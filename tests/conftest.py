"""Fixtures shared by every test folder."""
import pytest

from common.data.corpus import build_corpus
from common.contract.spec import get_spec


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory):
    """A 16-utterance espeak-ng corpus of short sentences (<= 40 characters), LJSpeech layout."""
    return build_corpus(tmp_path_factory.mktemp("tiny_corpus"), n=16, seed=0, max_chars=40, progress=False)


@pytest.fixture
def tiny_spec():
    return get_spec("tiny")
