"""Titles, descriptions and review texts: a noisy, synonym-rich view of category and style."""

from __future__ import annotations

import numpy as np

from data.stylemart.styles import STYLES, Rng

CATEGORY_NOUNS: dict[str, tuple[str, ...]] = {
    "shirt": ("shirt", "tee", "top", "t-shirt"),
    "dress": ("dress", "sundress", "midi dress", "frock"),
    "mug": ("mug", "cup", "coffee mug", "tea cup"),
    "bag": ("bag", "tote", "handbag", "shopper"),
    "sofa": ("sofa", "couch", "settee", "loveseat"),
    "lamp": ("lamp", "table lamp", "light", "lampshade"),
    "sneaker": ("sneaker", "trainer", "running shoe", "kicks"),
    "poster": ("poster", "art print", "wall art", "print"),
}
CATEGORY_DETAILS: dict[str, tuple[str, ...]] = {
    "shirt": ("Soft cotton jersey, regular fit.", "Breathable organic cotton with a relaxed cut."),
    "dress": ("Flowing viscose with a fitted waist.", "Lined, knee length, with side pockets."),
    "mug": ("Stoneware, 350 ml, dishwasher safe.", "Glazed ceramic that keeps coffee hot."),
    "bag": ("Roomy canvas body with an inner pocket.", "Vegan leather with a zip closure."),
    "sofa": ("Three seats, removable covers, solid beech legs.", "Deep cushions on a hardwood frame."),
    "lamp": ("E27 socket, fabric shade, 1.5 m cable.", "Dimmable, with a weighted base."),
    "sneaker": ("Cushioned sole and breathable upper.", "Lightweight runner with a grippy outsole."),
    "poster": ("Printed on 200 gsm matte paper, A2.", "Giclée print, frame not included."),
}
ADJECTIVES = ("classic", "everyday", "statement", "essential", "modern", "vintage", "signature", "new-season")
POSITIVE = ("Love", "Really like", "Adore", "So happy with", "Great")
NEGATIVE = ("Not a fan of", "Disappointed by", "Did not like", "Returned", "Not for me:")


def _pick(rng: Rng, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(0, len(words)))]


def product_text(category: str, style: int, rng: Rng) -> tuple[str, str]:
    """(title, description) for an item. The style word is sometimes missing from the title."""
    st = STYLES[style]
    noun = _pick(rng, CATEGORY_NOUNS[category])
    colour = _pick(rng, st.colour_words)
    style_word = _pick(rng, st.synonyms)
    parts = [_pick(rng, ADJECTIVES)] if rng.random() < 0.4 else []
    if rng.random() < 0.75:
        parts.append(style_word)
    if rng.random() < 0.6:
        parts.append(colour)
    parts.append(noun)
    title = " ".join(parts).capitalize()
    adjective = _pick(rng, ADJECTIVES)
    article = "An" if adjective[0] in "aeiou" else "A"
    description = (
        f"{article} {adjective} {noun} in {colour} with a {_pick(rng, st.synonyms)} look. "
        f"{_pick(rng, CATEGORY_DETAILS[category])}"
    )
    return title, description


def review_text(category: str, style: int, rating: int, rng: Rng) -> str:
    st = STYLES[style]
    noun = _pick(rng, CATEGORY_NOUNS[category])
    look = f"{_pick(rng, st.synonyms)} {_pick(rng, ('look', 'pattern', 'design', 'print'))}"
    colour = _pick(rng, st.colour_words)
    if rating >= 4:
        return f"{_pick(rng, POSITIVE)} the {look} of this {noun}. The {colour} is {_pick(rng, ('gorgeous', 'lovely', 'just right'))}."
    if rating == 3:
        return f"The {noun} is fine, the {look} is okay but the {colour} is a bit {_pick(rng, ('dull', 'loud', 'off'))}."
    return f"{_pick(rng, NEGATIVE)} the {look}. The {colour} {noun} {_pick(rng, ('is not my style', 'looks cheap', 'clashes with everything'))}."


def review_rating(match: np.ndarray, rng: Rng) -> np.ndarray:
    """Rating 1-5 from how well the item's style matched the user (``match`` = affinity x #styles)."""
    score = 3.0 + 1.1 * np.log(np.asarray(match) + 0.15) + rng.normal(0.0, 0.6, size=np.shape(match))
    return np.clip(np.rint(score), 1, 5).astype(np.int64)
