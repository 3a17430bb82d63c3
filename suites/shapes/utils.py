"""doc_to_visual / doc_to_text / process_results of the shapes tasks (loaded by lmms-eval via ``!function``)."""

import re

from prunebench.toy.world import render


def doc_to_visual(doc):
    """The scene, rendered deterministically from the doc's parameters (336x336 RGB)."""
    return [render(doc)]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    return f"{kw.get('pre_prompt', '')}{doc['question']}{kw.get('post_prompt', '')}"


def normalize(text):
    """First word, lower case, punctuation stripped ("Red." -> "red", " yes </s>" -> "yes")."""
    words = re.sub(r"<[^>]*>", " ", str(text)).lower()
    words = re.sub(r"[^a-z0-9 ]", " ", words).split()
    return words[0] if words else ""


def process_results(doc, results):
    pred = results[0] if results else ""
    return {"exact_match": float(normalize(pred) == doc["answer"])}
