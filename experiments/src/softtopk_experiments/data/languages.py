"""Word language identification: 33,000 words of 66 languages (500 each), drawn from the Hunspell
dictionaries Debian packages, as character n-gram TF-IDF + truncated-SVD features. Built by
experiments/scripts/build_languages.py; licences in LANGUAGES_LICENSE.txt beside the data.

The classes are ISO 639 codes (`CLASS_NAMES`, in label order; `LANGUAGE_NAMES` names them). Related
languages share many spellings (nb/nn/da/sv, hr/bs, es/gl/pt/an/ca, cs/sk, ru/uk/be, hi/ne, ...),
loanwords and names recur across dictionaries, and some words are in several: top-1 accuracy is
capped well below 1 while top-5 accuracy is not.
"""

from __future__ import annotations

from pathlib import Path

from softtopk_experiments.data.splits import DataError, Splits
from softtopk_experiments.data.text_sets import load_text_set, read_table, tfidf_svd_splits

DATA_FILE = "languages_words.tsv.gz"
_FORMAT = 1  # bump when the features change, so old cache files are not reused

LANGUAGE_NAMES: dict[str, str] = {
    "af": "Afrikaans", "an": "Aragonese", "ar": "Arabic", "be": "Belarusian", "bg": "Bulgarian",
    "bn": "Bengali", "br": "Breton", "bs": "Bosnian", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "eo": "Esperanto", "es": "Spanish", "et": "Estonian",
    "eu": "Basque", "fa": "Persian", "fo": "Faroese", "fr": "French", "ga": "Irish",
    "gd": "Scottish Gaelic", "gl": "Galician", "gu": "Gujarati", "gug": "Guarani", "gv": "Manx",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "kk": "Kazakh", "kmr": "Kurmanji Kurdish",
    "ko": "Korean", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "ml": "Malayalam",
    "mn": "Mongolian", "nb": "Norwegian Bokmål", "ne": "Nepali", "nl": "Dutch", "nn": "Norwegian Nynorsk",
    "oc": "Occitan", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian",
    "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian", "sq": "Albanian", "sr": "Serbian (Cyrillic)",
    "sv": "Swedish", "sw": "Swahili", "te": "Telugu", "th": "Thai", "tl": "Tagalog", "tr": "Turkish",
    "uk": "Ukrainian", "uz": "Uzbek (Cyrillic)", "vi": "Vietnamese",
}
CLASS_NAMES: tuple[str, ...] = tuple(sorted(LANGUAGE_NAMES))
"""The classes, in label order."""


def read_languages_table(data: bytes) -> tuple[list[str], list[str]]:
    """(language codes, words) from the gzipped `label<TAB>text` table with a header line."""
    return read_table(data, DATA_FILE)


def load_languages(cache_dir: Path | None = None, dim: int = 256, test_fraction: float = 0.2,
                   seed: int = 0) -> Splits:
    """The shipped word-language set as float32 features `[N, dim]` (L2-normalised rows) and int64
    labels `[N]` indexing `CLASS_NAMES`, with a stratified train/test split (26,400 / 6,600 words
    at the default `test_fraction`).

    Features: TF-IDF of character 1- to 4-grams within the word padded by spaces (case kept; sublinear
    tf, n-grams in >= 2 training words) fitted on the training words, then a truncated SVD to `dim`
    dimensions fitted on the training set. Cached under `cache_dir` (default `$SOFTTOPK_CACHE` or
    `~/.cache/softtopk`), keyed by the arguments and the data file's hash; the first build takes
    about 10 s. Needs scikit-learn (`pip install ./experiments`). Licence: each word is from
    a dictionary under its own free licence (GPL, LGPL, MPL, ...; see LANGUAGES_LICENSE.txt).
    """
    return load_text_set("languages", DATA_FILE, "experiments/scripts/build_languages.py", _FORMAT,
                         lambda *args: _build(*args), cache_dir, dim, test_fraction, seed)  # late-bound


def _build(data: bytes, dim: int, test_fraction: float, seed: int) -> Splits:
    labels, words = read_languages_table(data)
    if tuple(sorted(set(labels))) != CLASS_NAMES:
        raise DataError(f"{DATA_FILE} must hold the {len(CLASS_NAMES)} languages of CLASS_NAMES, found "
                        f"{len(set(labels))} labels (rebuild it with experiments/scripts/build_languages.py)")
    return tfidf_svd_splits(labels, words, dim, test_fraction, seed, analyzer="char_wb",
                            ngram_range=(1, 4), lowercase=False)
