"""Offline language resources: WordNet for synonym swap (from Debian) and Apertium for back-translation.

`python -m pipeline.core.resources` prepares and checks them (the bootstrap script runs it); the augment stage calls
the same functions, so a missing install is a clear error naming the Debian package, before any work.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from pipeline.core.io import KnownError

log = logging.getLogger(__name__)

DEBIAN_WORDNET = Path("/usr/share/wordnet")
APERTIUM_MODES = Path("/usr/share/apertium/modes")


class ResourceError(KnownError, RuntimeError):
    """A missing offline resource (WordNet, an Apertium pair); the message names the Debian package."""


# lexnames(5WN): Debian ships WordNet without the `lexnames` file that NLTK's reader opens.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity "
    "noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition "
    "verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def nltk_data_dir() -> Path:
    """Where we put NLTK data: $NLTK_DATA if set, else <sys.prefix>/nltk_data, which NLTK searches by default."""
    env = os.environ.get("NLTK_DATA")
    return Path(env.split(os.pathsep)[0]) if env else Path(sys.prefix) / "nltk_data"


def ensure_wordnet() -> None:
    """Make `nltk.corpus.wordnet` work offline, copying Debian's WordNet 3.0 into NLTK's data dir once."""
    import nltk
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
        return
    except LookupError:
        pass
    if not (DEBIAN_WORDNET / "data.noun").is_file():
        raise ResourceError(
            "WordNet is not installed: synonym swap needs it offline. Install it with "
            "`apt-get install wordnet-base wordnet-sense-index` (or run scripts/bootstrap.sh), "
            "or set augment.synonym.enabled: false"
        )
    target = nltk_data_dir() / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    # nltk >= 3.9 refuses symlinks that leave its data root, so copy (about 30 MB, once).
    for f in DEBIAN_WORDNET.iterdir():
        if f.is_file():
            shutil.copyfile(f, target / f.name)
    lines = [f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}" for i, name in enumerate(_LEXNAMES)]
    (target / "lexnames").write_text("\n".join(lines) + "\n")
    if str(nltk_data_dir()) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_data_dir()))
    wordnet.ensure_loaded()
    log.info("prepared WordNet %s in %s", wordnet.get_version(), target)


def ensure_apertium(source: str, pivots: list[str]) -> None:
    if shutil.which("apertium") is None:
        raise ResourceError(
            "apertium is not installed: the default back-translation backend needs it. Install it with "
            "`apt-get install apertium apertium-eng-spa` (or run scripts/bootstrap.sh), or set "
            "augment.back_translation.backend: hf / enabled: false"
        )
    for p in pivots:
        for pair in (f"{source}-{p}", f"{p}-{source}"):
            if not (APERTIUM_MODES / f"{pair}.mode").is_file():
                raise ResourceError(
                    f"augment.back_translation.pivots: apertium has no {pair} mode in {APERTIUM_MODES}; "
                    f"install the Debian package apertium-{source}-{p} (or apertium-{p}-{source})"
                )


def main() -> None:
    from pipeline.core.io import setup_logging

    setup_logging()
    ensure_wordnet()
    ensure_apertium("eng", ["spa"])
    from nltk.corpus import wordnet

    log.info("resources ok: WordNet %s, apertium eng<->spa", wordnet.get_version())


if __name__ == "__main__":
    main()
