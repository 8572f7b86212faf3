"""Caption metrics with the reference implementation caption papers use: pycocoevalcap (the COCO caption code).

``score_captions(references, candidates)`` takes, per clip id, every reference caption and the one candidate,
tokenises both with the COCO PTBTokenizer (Stanford CoreNLP's PTB tokenizer, lower-cased, punctuation
dropped), then computes BLEU-4 (``Bleu(4)``, corpus-level, 'closest' reference length), METEOR 1.5
(``Meteor``), ROUGE-L (``Rouge``) and CIDEr-D (``Cider``: pycocoevalcap's CIDEr is the CIDEr-D variant:
clipped n-gram counts, a Gaussian length penalty with sigma 6, scaled by 10; its document frequencies come
from the references of the scored set itself). All values are as pycocoevalcap returns them (fractions;
papers print them x 100: VALOR-L's CIDEr 61.5 is 0.615 here).

Java runs the PTB tokenizer and METEOR. Without a ``java`` on the PATH, METEOR is None ("unavailable") and a
pure-Python tokenizer stands in for PTB (lower-case, words split from punctuation, punctuation dropped: the
same tokens on plain captions, clitics split as PTB does: "don't" -> "do n't"); ``notes`` says which ran. SPICE
is left out: it downloads Stanford CoreNLP models at first use, and runs here must not need the network.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from typing import Any

from ...extras import require

METRICS = ("bleu4", "meteor", "rouge_l", "cider")
JAVA_FIX = "install Java to get METEOR and the PTB tokenizer: apt-get install -y default-jre-headless"
# The COCO tokenizer drops these tokens after PTB tokenisation (pycocoevalcap's PUNCTUATIONS; its bracket
# tokens are upper-case while the tokenizer lower-cases, so brackets stay, as -lrb- etc.: a quirk kept here).
_PUNCT = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-"}
_WORD = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\d+(?:[.,]\d+)+|\w+(?:-\w+)*|\.\.\.|--|[^\w\s]", re.UNICODE)
_CLITIC = re.compile(r"(?<=[a-z])(?=n't\b)|(?<=[a-z])(?='(?:s|re|ve|ll|d|m)\b)")
_meteor: Any = None  # one METEOR process per Python process: it takes seconds to start


def java_available() -> bool:
    return shutil.which("java") is not None


def python_tokenize(caption: str) -> str:
    """The Java-free stand-in for the COCO PTB tokenisation (see the module docstring)."""
    text = _CLITIC.sub(" ", caption.lower().replace("\n", " "))  # "don't" -> "do n't", "dog's" -> "dog 's"
    return " ".join(_BRACKETS.get(w, w) for w in _WORD.findall(text) if w not in _PUNCT and w != '"')


def tokenize(captions: dict[str, list[str]]) -> tuple[dict[str, list[str]], str]:
    """{id: [caption, ...]} -> the same, tokenised COCO-style; and which tokenizer ran ('ptb' or 'python')."""
    if not java_available():
        return {k: [python_tokenize(c) for c in v] for k, v in captions.items()}, "python"
    require("text", "caption scoring")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # PTBTokenizer reads one line per caption: a newline inside a caption would shift every later one.
    flat = {k: [{"caption": " ".join(c.split())} for c in v] for k, v in captions.items()}
    out = PTBTokenizer().tokenize(flat)
    return {k: out.get(k, [""] * len(v)) for k, v in captions.items()}, "ptb"


def _meteor_scorer() -> Any:
    global _meteor
    if _meteor is None:
        require("text", "caption scoring")
        from pycocoevalcap.meteor.meteor import Meteor

        _meteor = Meteor()
    return _meteor


def score_captions(references: dict[str, list[str]], candidates: dict[str, str]) -> dict[str, Any]:
    """-> {'bleu4', 'meteor', 'rouge_l', 'cider', 'bleu1', 'clips', 'notes': {...}}; ``references`` and
    ``candidates`` must have the same ids, every clip at least one reference. ``meteor`` is None without Java."""
    require("text", "caption scoring")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(references) != set(candidates):
        missing = sorted(set(references) ^ set(candidates))[:3]
        raise ValueError(f"references and candidates cover different clips (e.g. {missing}): every clip must be "
                         f"captioned exactly once")
    if not references:
        raise ValueError("no captions to score: the split yielded no clips")
    empty = [k for k, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"clip {empty[0]!r} has no reference caption ({len(empty)} such clips)")
    ids = sorted(references)
    joint = {**{f"r{k}": references[k] for k in ids}, **{f"c{k}": [candidates[k]] for k in ids}}
    tokens, tokenizer = tokenize(joint)
    gts = {k: tokens[f"r{k}"] for k in ids}
    res = {k: tokens[f"c{k}"] for k in ids}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its internals
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    meteor = None
    if java_available():
        meteor, _ = _meteor_scorer().compute_score(gts, res)
    notes = {"tokenizer": "PTB (Stanford CoreNLP, via pycocoevalcap)" if tokenizer == "ptb" else
             f"python stand-in for PTB (Java not found; {JAVA_FIX})",
             "meteor": "METEOR 1.5 (pycocoevalcap)" if meteor is not None else f"unavailable ({JAVA_FIX})",
             "spice": "not computed (SPICE downloads Stanford models at first use)"}
    return {"bleu4": float(bleu[3]), "meteor": None if meteor is None else float(meteor), "rouge_l": float(rouge),
            "cider": float(cider), "bleu1": float(bleu[0]), "clips": len(ids), "notes": notes}
