"""Build the shipped word language-identification set from Debian's Hunspell dictionaries.

Usage::

    python experiments/scripts/build_languages.py [DOWNLOAD_DIR]

DOWNLOAD_DIR is a folder holding the packages' `.deb` files (`apt-get download PACKAGE...` for the
packages in `LANGUAGES`); without it the script downloads them itself into a temporary folder (needs
apt and the Debian package index). Each package is extracted with `dpkg -x`.

From every language's `.dic` file (its encoding from the `SET` line of the `.aff` file) the stems are
kept that are 3 to 24 characters long, made of letters and combining marks only (plus an inner
apostrophe, hyphen, middle dot, ZWJ or ZWNJ) and distinct; `WORDS_PER_LANGUAGE` of them are drawn at
random with a seed fixed by the language code. A word found in several languages' dictionaries stays
in each: that is the set's irreducible ambiguity. Writes, byte-identically on every run:

- `softtopk_experiments/data/shipped/languages_words.tsv.gz`: header `label<TAB>text`, then one row per
  word, sorted by language code and word; gzip with mtime 0.
- `softtopk_experiments/data/shipped/LANGUAGES_LICENSE.txt`: the packages, their versions and
  dictionaries, then each distinct Debian copyright file of those packages.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import re
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

from _shipping import SHIPPED, main_on_debs, write_files

WORDS_PER_LANGUAGE = 500
MIN_LENGTH, MAX_LENGTH = 3, 24
INNER = set("'-\u2019\u00b7\u200c\u200d")  # apostrophes, hyphen, middle dot, ZWNJ, ZWJ
OUT_DIR = SHIPPED

# label -> (language, Debian package, dictionary under usr/share/hunspell). One dictionary per
# language: LibreOffice's (package version 1:7.5.0-1) where Debian has it, so most share one
# copyright file. Tibetan and Dzongkha are left out (under 500 stems each).
LANGUAGES: dict[str, tuple[str, str, str]] = {
    "af": ("Afrikaans", "hunspell-af", "af_ZA"), "an": ("Aragonese", "hunspell-an", "an_ES"),
    "ar": ("Arabic", "hunspell-ar", "ar"), "be": ("Belarusian", "hunspell-be", "be_BY"),
    "bg": ("Bulgarian", "hunspell-bg", "bg_BG"), "bn": ("Bengali", "hunspell-bn", "bn_BD"),
    "br": ("Breton", "hunspell-br", "br_FR"), "bs": ("Bosnian", "hunspell-bs", "bs_BA"),
    "ca": ("Catalan", "hunspell-ca", "ca"), "cs": ("Czech", "hunspell-cs", "cs_CZ"),
    "da": ("Danish", "hunspell-da", "da_DK"), "de": ("German", "hunspell-de-de-frami", "de_DE_frami"),
    "el": ("Greek", "hunspell-el", "el_GR"), "en": ("English", "hunspell-en-gb", "en_GB"),
    "eo": ("Esperanto", "myspell-eo", "eo"), "es": ("Spanish", "hunspell-es", "es_ES"),
    "et": ("Estonian", "myspell-et", "et_EE"), "eu": ("Basque", "hunspell-eu", "eu"),
    "fa": ("Persian", "myspell-fa", "fa_IR"), "fo": ("Faroese", "myspell-fo", "fo"),
    "fr": ("French", "hunspell-fr-classical", "fr"), "ga": ("Irish", "myspell-ga", "ga_IE"),
    "gd": ("Scottish Gaelic", "hunspell-gd", "gd_GB"), "gl": ("Galician", "hunspell-gl", "gl_ES"),
    "gu": ("Gujarati", "hunspell-gu", "gu_IN"), "gug": ("Guarani", "hunspell-gug", "gug_PY"),
    "gv": ("Manx", "myspell-gv", "gv_GB"), "he": ("Hebrew", "hunspell-he", "he_IL"),
    "hi": ("Hindi", "hunspell-hi", "hi_IN"), "hr": ("Croatian", "hunspell-hr", "hr_HR"),
    "hu": ("Hungarian", "hunspell-hu", "hu_HU"), "hy": ("Armenian", "myspell-hy", "hy_AM"),
    "id": ("Indonesian", "hunspell-id", "id_ID"), "is": ("Icelandic", "hunspell-is", "is_IS"),
    "it": ("Italian", "hunspell-it", "it_IT"), "kk": ("Kazakh", "hunspell-kk", "kk_KZ"),
    "kmr": ("Kurmanji Kurdish", "hunspell-kmr", "kmr_Latn"), "ko": ("Korean", "hunspell-ko", "ko"),
    "lo": ("Lao", "hunspell-lo", "lo_LA"), "lt": ("Lithuanian", "hunspell-lt", "lt_LT"),
    "lv": ("Latvian", "hunspell-lv", "lv_LV"), "ml": ("Malayalam", "hunspell-ml", "ml_IN"),
    "mn": ("Mongolian", "hunspell-mn", "mn_MN"), "nb": ("Norwegian Bokmål", "hunspell-no", "nb_NO"),
    "ne": ("Nepali", "hunspell-ne", "ne_NP"), "nl": ("Dutch", "hunspell-nl", "nl"),
    "nn": ("Norwegian Nynorsk", "hunspell-no", "nn_NO"), "oc": ("Occitan", "hunspell-oc", "oc_FR"),
    "pl": ("Polish", "hunspell-pl", "pl_PL"), "pt": ("Portuguese", "hunspell-pt-pt", "pt_PT"),
    "ro": ("Romanian", "hunspell-ro", "ro_RO"), "ru": ("Russian", "hunspell-ru", "ru_RU"),
    "si": ("Sinhala", "hunspell-si", "si_LK"), "sk": ("Slovak", "hunspell-sk", "sk_SK"),
    "sl": ("Slovenian", "hunspell-sl", "sl_SI"), "sq": ("Albanian", "myspell-sq", "sq_AL"),
    "sr": ("Serbian", "hunspell-sr", "sr_RS"), "sv": ("Swedish", "hunspell-sv", "sv_SE"),
    "sw": ("Swahili", "hunspell-sw", "sw_TZ"), "te": ("Telugu", "hunspell-te", "te_IN"),
    "th": ("Thai", "hunspell-th", "th_TH"), "tl": ("Tagalog", "myspell-tl", "tl"),
    "tr": ("Turkish", "hunspell-tr", "tr_TR"), "uk": ("Ukrainian", "hunspell-uk", "uk_UA"),
    "uz": ("Uzbek", "hunspell-uz", "uz_UZ"), "vi": ("Vietnamese", "hunspell-vi", "vi_VN"),
}


def encoding(aff: Path) -> str:
    """The character set named by the `.aff` file's SET line (UTF-8 if it has none)."""
    match = re.search(rb"^(?:\xef\xbb\xbf)?SET\s+(\S+)", aff.read_bytes(), re.MULTILINE)
    return match.group(1).decode("ascii") if match else "UTF-8"


def is_word(stem: str) -> bool:
    """3-24 letters or combining marks, with only `INNER` characters between them."""
    if not MIN_LENGTH <= len(stem) <= MAX_LENGTH or stem[0] in INNER or stem[-1] in INNER:
        return False
    return all(c in INNER or unicodedata.category(c)[0] in "LM" for c in stem)


def stems(dic: Path) -> list[str]:
    """The distinct, sorted stems of a Hunspell `.dic` file that pass `is_word` (NFC-normalised)."""
    lines = dic.read_bytes().decode(encoding(dic.with_suffix(".aff"))).lstrip("\ufeff").splitlines()
    words = set()
    for line in lines[1:]:  # the first line is the entry count
        entry = line.split()[0] if line.strip() else ""
        stem = re.split(r"(?<!\\)/", entry, maxsplit=1)[0]
        stem = unicodedata.normalize("NFC", stem)
        if is_word(stem):
            words.add(stem)
    return sorted(words)


def sample(code: str, words: list[str]) -> list[str]:
    if len(words) < WORDS_PER_LANGUAGE:
        raise ValueError(f"{code}: only {len(words)} usable stems, need {WORDS_PER_LANGUAGE}")
    return sorted(random.Random(f"languages-{code}").sample(words, WORDS_PER_LANGUAGE))


def write_outputs(download_dir: Path) -> None:
    rows, sources, copyrights = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for code, (language, package, dictionary) in sorted(LANGUAGES.items()):
            (deb,) = sorted(download_dir.glob(f"{package}_*.deb"))
            root = Path(tmp) / package
            if not root.exists():
                subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
            version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                                     capture_output=True, text=True).stdout.strip()
            words = stems(root / "usr/share/hunspell" / f"{dictionary}.dic")
            rows += [(code, word) for word in sample(code, words)]
            text = (root / "usr/share/doc" / package / "copyright").read_text(encoding="utf-8")
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            copyrights.setdefault(digest, (package, text))
            sources.append(f"{code:4} {language:18} {package} {version}, {dictionary}.dic "
                           f"({len(words)} usable stems); copyright file {digest}")
    table = "label\ttext\n" + "".join(f"{code}\t{word}\n" for code, word in rows)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as gz:
        gz.write(table.encode("utf-8"))
    licence = ("The file languages_words.tsv.gz holds words drawn from the Hunspell dictionaries that\n"
               "Debian packages, one per language (label, language, package, version, dictionary):\n\n"
               + "\n".join(sources) + "\n\nThe packages' Debian copyright files follow; each dictionary's\n"
               "licence is the one its package's file gives for it.\n")
    for digest, (package, text) in copyrights.items():
        licence += f"\n{'=' * 78}\ncopyright file {digest} (from {package})\n{'=' * 78}\n\n{text}"
    write_files(OUT_DIR, {"languages_words.tsv.gz": buffer.getvalue(),
                          "LANGUAGES_LICENSE.txt": licence.encode("utf-8")})
    print(f"{len(rows)} words in {len(LANGUAGES)} languages -> {OUT_DIR}")


def main(argv: list[str] | None = None) -> None:
    packages = {package for _, package, _ in LANGUAGES.values()}
    main_on_debs(__doc__.splitlines()[0], packages, write_outputs, argv)


if __name__ == "__main__":
    sys.exit(main())
