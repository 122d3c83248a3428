"""Text perturbations (vlmkit.perturb.text) and toy-world meaning probes (vlmkit.toyworld.probes).

Expected values are hand-computed (change counts per severity, known rewrites), come from independent
references (a QWERTY geometry written here, the COCO class list written here, ``vlmkit.runtime``'s seeding
rule, the toy grammar's parser against the renderer's ground truth), or are properties a broken
implementation would violate.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest

from vlmkit.errors import InputError, RegistryError
from vlmkit.perturb import text as T
from vlmkit.registry import TEXT_PERTURBATIONS
from vlmkit.runtime import derive_seed
from vlmkit.toyworld import grammar, world
from vlmkit.toyworld.probes import PROBE_KINDS, caption_holds, meaning_probes, probe_set

ALL = ("char_swap", "char_insert", "char_delete", "keyboard_typo", "word_dropout", "word_shuffle", "synonym",
       "paraphrase", "swap_color", "swap_count", "swap_object")
META = {  # name -> (family, preserves_meaning), as the brief sets them
    "char_swap": ("character", False), "char_insert": ("character", False), "char_delete": ("character", False),
    "keyboard_typo": ("character", False), "word_dropout": ("word", False), "word_shuffle": ("word", False),
    "synonym": ("meaning-preserving", True), "paraphrase": ("meaning-preserving", True),
    "swap_color": ("meaning-changing", False), "swap_count": ("meaning-changing", False),
    "swap_object": ("meaning-changing", False),
}
SAMPLES = (
    "A man riding a horse next to a red car.",
    "a photo of a large dog and three cats",
    ('a photo of a small red circle on the left and a big blue star in the center on a plain background, '
     'and a sign that says "cat"'),
    "an image of two small bikes beside a TV",
    "x",
    "",
)
# The 80 MS-COCO object classes (COCO API names), written out independently of the shipped table.
COCO = {"person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
        "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
        "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
        "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
        "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
        "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
        "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
        "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
        "teddy bear", "hair drier", "toothbrush"}
BASIC_COLOURS = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray",
                 "grey", "violet", "cyan", "magenta", "beige", "tan", "gold", "silver", "maroon", "navy"}
LETTERS100 = "abcdefghij" * 10  # 100 candidate characters, adjacent ones all different
TEN_WORDS = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def hamming(a: str, b: str) -> int:
    assert len(a) == len(b)
    return sum(x != y for x, y in zip(a, b))


def is_subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


# ----------------------------------------------------------------------------------------------------
# Registry and contract
# ----------------------------------------------------------------------------------------------------


def test_registry_holds_every_text_perturbation_with_its_metadata():
    assert set(TEXT_PERTURBATIONS.list()) == set(ALL)
    for name, (family, preserving) in META.items():
        meta = TEXT_PERTURBATIONS.meta(name)
        assert (meta["family"], meta["preserves_meaning"]) == (family, preserving), name
        assert meta["severities"] == (0, 1, 2, 3, 4, 5)
    assert T.list_text_perturbations(preserves_meaning=True) == ["paraphrase", "synonym"]
    assert T.list_text_perturbations(family="character") == ["char_delete", "char_insert", "char_swap",
                                                              "keyboard_typo"]
    with pytest.raises(InputError, match="family"):
        T.register_text_perturbation("nope", family="noise", preserves_meaning=False)


@pytest.mark.parametrize("name", ALL)
def test_severity_zero_is_identity_and_calls_are_deterministic(name):
    fn = TEXT_PERTURBATIONS.get(name)
    for text in SAMPLES:
        assert fn(text, 0) == text
        assert fn(text, 0, rng=rng(5)) == text
        for s in (1, 3, 5):
            assert fn(text, s, rng=rng(7)) == fn(text, s, rng=rng(7))
            assert fn(text, s) == fn(text, s, rng=rng(0))  # None means a generator seeded 0
    # the seed matters: over 12 seeds a random op gives more than one result on a long caption
    outs = {fn(SAMPLES[2], 2, rng=rng(i)) for i in range(12)}
    assert len(outs) > 1, f"{name} ignores its generator"


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs_raise_input_error_naming_the_argument(name):
    fn = TEXT_PERTURBATIONS.get(name)
    for bad in (6, -1, 1.5, True, "1", None):
        with pytest.raises(InputError, match="severity"):
            fn("a red car", bad)
    for bad in (None, b"a red car", 3, ["a red car"]):
        with pytest.raises(InputError, match="text must be a str"):
            fn(bad, 1)
    with pytest.raises(InputError, match="rng"):
        fn("a red car", 1, rng=42)
    with pytest.raises(InputError, match="keep"):
        fn("a red car", 1, keep=5)
    with pytest.raises(InputError, match="keep_fields"):
        fn("a red car", 1, keep_fields="yes")


def test_bad_parameters_of_table_ops_raise_input_error():
    with pytest.raises(InputError, match="colors"):
        T.swap_color("a red car", 1, colors="neon")
    with pytest.raises(InputError, match="colors"):
        T.swap_color("a red car", 1, colors=["red"])
    with pytest.raises(InputError, match="vocabulary"):
        T.swap_object("a dog", 1, vocabulary=["dog"])
    with pytest.raises(InputError, match="plural_word"):
        T.swap_count("a dog", 1, plural_word="one")
    with pytest.raises(InputError, match="groups"):
        T.synonym("a dog", 1, groups=[["dog"]])
    with pytest.raises(InputError, match="one group only"):
        T.synonym("a dog", 1, groups=[["dog", "hound"], ["dog", "canine"]])


# ----------------------------------------------------------------------------------------------------
# Character and word noise: the change counts of the schedule
# ----------------------------------------------------------------------------------------------------

# hand-computed: round-half-up(rate * n), at least 1 for severity >= 1
CHAR_K_100 = [0, 2, 5, 10, 15, 25]  # n = 100, rates 0, .02, .05, .1, .15, .25
WORD_K_10 = [0, 1, 2, 3, 4, 5]  # n = 10, rates 0, .1, .2, .3, .4, .5


@pytest.mark.parametrize("severity", range(6))
def test_char_delete_removes_exactly_round_rate_n_characters(severity):
    out = T.char_delete(LETTERS100, severity, rng=rng(severity))
    assert len(out) == 100 - CHAR_K_100[severity]
    assert is_subsequence(out, LETTERS100)


@pytest.mark.parametrize("severity", range(6))
def test_char_insert_adds_exactly_k_letters(severity):
    out = T.char_insert(LETTERS100, severity, rng=rng(severity))
    assert len(out) == 100 + CHAR_K_100[severity]
    assert is_subsequence(LETTERS100, out)
    assert re.fullmatch("[a-z]*", out)


@pytest.mark.parametrize("severity", range(6))
def test_char_swap_transposes_k_disjoint_pairs(severity):
    out = T.char_swap(LETTERS100, severity, rng=rng(severity))
    assert Counter(out) == Counter(LETTERS100)
    assert hamming(out, LETTERS100) == 2 * CHAR_K_100[severity]
    diff = [i for i in range(100) if out[i] != LETTERS100[i]]
    for i, j in zip(diff[::2], diff[1::2]):  # changes come in adjacent transposed pairs
        assert j == i + 1 and (out[i], out[j]) == (LETTERS100[j], LETTERS100[i])


def _qwerty_neighbours() -> dict[str, set[str]]:
    """Keys whose centres are at most 1.3 key widths apart on a staggered QWERTY layout."""
    rows = {0: ("1234567890", 0.0), 1: ("qwertyuiop", 0.5), 2: ("asdfghjkl", 0.75), 3: ("zxcvbnm", 1.25)}
    pos = {ch: (off + j, r) for r, (keys, off) in rows.items() for j, ch in enumerate(keys)}
    return {a: {b for b, (x2, y2) in pos.items() if b != a and math.hypot(x1 - x2, y1 - y2) <= 1.3}
            for a, (x1, y1) in pos.items()}


def test_keyboard_neighbours_are_the_touching_qwerty_keys():
    ref = _qwerty_neighbours()
    assert {k: set(v) for k, v in T.KEYBOARD_NEIGHBOURS.items()} == ref
    assert ref["q"] == {"1", "2", "w", "a"} and ref["g"] == {"f", "h", "t", "y", "v", "b"}


@pytest.mark.parametrize("severity", range(6))
def test_keyboard_typo_replaces_k_characters_by_neighbours(severity):
    ref = _qwerty_neighbours()
    text = LETTERS100.upper()[:50] + LETTERS100[50:]
    out = T.keyboard_typo(text, severity, rng=rng(severity))
    assert hamming(out, text) == CHAR_K_100[severity]
    for a, b in zip(text, out):
        if a != b:
            assert b.lower() in ref[a.lower()] and (a.isupper() == b.isupper() or b.isdigit())


def test_character_ops_change_at_least_one_character_and_skip_whitespace():
    assert len(T.char_delete("cat", 1)) == 2  # .02 * 3 rounds to 0: at least one
    assert len(T.char_insert("cat", 1)) == 4
    assert T.char_delete("   ", 5) == "   "  # no candidate: unchanged
    out = T.char_delete("ab cd ef gh", 5, rng=rng(1))  # 8 candidates, 25 % -> 2 deleted, never a space
    assert len(out) == 9 and out.count(" ") == 3
    assert T.keyboard_typo("{} !?", 5) == "{} !?"


@pytest.mark.parametrize("severity", range(6))
def test_word_dropout_removes_k_words_in_order(severity):
    out = T.word_dropout(TEN_WORDS, severity, rng=rng(severity))
    words = out.split(" ")
    assert len(words) == 10 - WORD_K_10[severity]
    assert words == sorted(words, key=lambda w: int(w[1:]))  # kept words keep their order
    assert set(words) <= set(TEN_WORDS.split())


def test_word_dropout_never_drops_every_word():
    assert T.word_dropout("cat", 5) == "cat"
    assert len(T.word_dropout("a cat", 5).split()) == 1


@pytest.mark.parametrize("severity", range(6))
def test_word_shuffle_moves_exactly_m_words(severity):
    out = T.word_shuffle(TEN_WORDS, severity, rng=rng(severity))
    words, orig = out.split(" "), TEN_WORDS.split(" ")
    assert Counter(words) == Counter(orig)
    moved = sum(a != b for a, b in zip(words, orig))
    assert moved == [0, 2, 2, 3, 4, 5][severity]  # max(2, round(rate * 10)) words moved


def test_word_shuffle_with_repeated_words_still_moves_m_positions():
    text = "a cat and a dog and a bird"
    for seed in range(20):
        out = T.word_shuffle(text, 5, rng=rng(seed))  # m = max(2, 4) = 4 distinct words
        assert Counter(out.split()) == Counter(text.split())
        assert sum(a != b for a, b in zip(out.split(), text.split())) == 4
    assert T.word_shuffle("the the the", 5) == "the the the"


# ----------------------------------------------------------------------------------------------------
# Meaning-preserving: synonyms and paraphrases
# ----------------------------------------------------------------------------------------------------

SYN_TEXT = "the big dog near the small cat and the tv"
SYN_OK = {1: {"large"}, 5: {"little"}, 9: {"television"}}  # position -> acceptable synonyms, by hand


@pytest.mark.parametrize("severity", range(6))
def test_synonym_replaces_min_severity_n_terms_by_true_synonyms(severity):
    for seed in range(5):
        out = T.synonym(SYN_TEXT, severity, rng=rng(seed)).split(" ")
        orig = SYN_TEXT.split(" ")
        assert len(out) == len(orig)
        changed = [i for i, (a, b) in enumerate(zip(out, orig)) if a != b]
        assert len(changed) == min(severity, 3)
        assert all(i in SYN_OK and out[i] in SYN_OK[i] for i in changed)


def test_synonym_keeps_case_fixes_articles_and_leaves_quotes_alone():
    assert T.synonym("Big dog", 1) == "Large dog"
    assert T.synonym("an image", 1, rng=rng(3)) in {"a photo", "a picture", "a photograph"}
    assert T.synonym("A photo", 1, rng=rng(3)) in {"An image", "A picture", "A photograph"}
    assert T.synonym('a sign that says "big"', 5) == 'a sign that says "big"'
    assert T.synonym("a red hot dog", 1) == "a red hotdog"  # longest match first: not "dog" alone
    assert T.synonym("a dog", 5) == "a dog"  # nothing to replace


def test_paraphrase_rewrites_frames_and_transcriptions():
    frames = {"a picture of a dog", "an image of a dog", "a photograph of a dog", "an image showing a dog",
              "a photo showing a dog", "a picture showing a dog"}
    outs = {T.paraphrase("a photo of a dog", 1, rng=rng(i)) for i in range(40)}
    assert outs == frames
    assert T.paraphrase('a label reading "star"', 1, rng=rng(0)) in {
        'a label that says "star"', 'a label that reads "star"', 'a label saying "star"'}
    assert T.paraphrase("a cat next to a dog in the center", 5) in {
        "a cat beside a dog in the middle"}
    assert T.paraphrase("a boy reading a book", 5) == "a boy reading a book"  # "reading" only before a quote


def _parsed_objects(caption: str) -> list[tuple[str | None, ...]]:
    return [tuple(o.get(k) for k in ("shape", "color", "size", "position"))
            for o in grammar.parse_prompt(caption).objects]


@pytest.mark.parametrize("name", ["synonym", "paraphrase"])
def test_meaning_preserving_ops_keep_the_toy_grammar_parse(name):
    changed = 0
    for i in range(60):
        cap = grammar.describe(world.sample_scene(3, i))
        out = TEXT_PERTURBATIONS.get(name)(cap, 5, rng=rng(i))
        changed += out != cap
        parsed, ref = grammar.parse_prompt(out), grammar.parse_prompt(cap)
        assert _parsed_objects(out) == _parsed_objects(cap), (cap, out)
        assert (parsed.word, parsed.background, parsed.blank_sign) == (ref.word, ref.background, ref.blank_sign)
    assert changed == 60  # every complete caption has a frame, a size word ... to rewrite


def test_tables_hold_only_true_synonyms():
    groups = T.synonym_groups()
    terms = [w for g in groups for w in g]
    assert len(terms) == len(set(terms)), "a term is in two synonym groups"
    world_words = set(world.SHAPES) | set(world.COLOR_NAMES) | set(world.POSITION_NAMES) | BASIC_COLOURS
    size_class = {w: s for s, ws in grammar.SIZE_WORDS.items() for w in ws}
    for g in groups:
        assert not set(g) & world_words, f"colour/shape/position word in synonym group {g}"
        assert len({size_class[w] for w in g if w in size_class}) <= 1, f"size swap in {g}"
        assert len(set(g) & COCO) <= 1, f"two COCO classes in one synonym group {g}"
        assert len(set(g) & set(T.load_tables()["numbers"])) == 0
    # the toy grammar's own size synonyms are in the table, each in one group
    for options in grammar.SIZE_WORDS.values():
        assert any(set(options) <= set(g) for g in groups), options
    # paraphrases never move a toy object: phrases naming positions name one position per group
    for g in T.paraphrase_groups():
        places = {p for phrase in g for p, phs in grammar.POSITION_PHRASES.items() for ph in phs if ph in phrase}
        assert len(places) <= 1, g
        assert not any(c in phrase.split() for phrase in g for c in set(world.SHAPES) | BASIC_COLOURS), g


def test_shipped_vocabularies_match_the_world_and_coco():
    tables = T.load_tables()
    assert set(tables["colors"]["toyworld"]) == set(world.COLOR_NAMES)
    assert set(tables["objects"]["toyworld"]) == set(world.SHAPES)
    assert set(tables["coco_classes"]) == COCO and len(tables["coco_classes"]) == 80
    coco_objects = set(tables["objects"]["coco"])
    assert coco_objects - {"ski"} <= COCO and "skis" in COCO
    assert not coco_objects & BASIC_COLOURS  # "orange" is a colour, not an object


# ----------------------------------------------------------------------------------------------------
# Meaning-changing swaps
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("severity", range(6))
def test_swap_color_changes_min_severity_n_colour_words(severity):
    text = "a red car next to a blue bus"
    basic = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray"}
    for seed in range(5):
        out = T.swap_color(text, severity, rng=rng(seed)).split(" ")
        orig = text.split(" ")
        changed = [i for i, (a, b) in enumerate(zip(out, orig)) if a != b and i not in (0, 5)]  # not articles
        assert len(changed) == min(severity, 2)
        assert all(i in (1, 6) and out[i] in basic - {orig[i]} for i in changed)
        for i in (1, 6):  # articles agree with the (possibly new) colour
            assert out[i - 1] == ("an" if out[i][0] in "aeiou" else "a")


def test_swap_color_articles_quotes_and_vocabulary():
    assert T.swap_color("a red apple", 1, colors=["red", "orange"]) == "an orange apple"
    assert T.swap_color("An orange cat", 1, colors=["orange", "red"]) == "A red cat"
    assert T.swap_color('a sign that says "red"', 5) == 'a sign that says "red"'
    out = T.swap_color("a small red circle", 1, colors="toyworld", rng=rng(2))
    assert out.split()[2] in set(world.COLOR_NAMES) - {"red"}


@pytest.mark.parametrize("severity", range(6))
def test_swap_object_replaces_min_severity_n_nouns_within_vocabulary(severity):
    text = "a dog on a bed"
    for seed in range(5):
        out = T.swap_object(text, severity, rng=rng(seed), vocabulary="coco")
        m = re.fullmatch(r"(a|an) (.+) on (a|an) (.+)", out)
        assert m, out
        nouns = [m.group(2), m.group(4)]
        changed = [a != b for a, b in zip(nouns, ["dog", "bed"])]
        assert sum(changed) == min(severity, 2)
        assert all(n in COCO for n in nouns)
        assert m.group(1) == ("an" if nouns[0][0] in "aeiou" else "a")
        assert m.group(3) == ("an" if nouns[1][0] in "aeiou" else "a")


def test_swap_object_keeps_number_and_finds_longest_names():
    assert T.swap_object("a dog", 1, vocabulary=["dog", "elephant"]) == "an elephant"
    assert T.swap_object("two dogs", 1, vocabulary=["dog", "cat"]) == "two cats"
    assert T.swap_object("three knives", 1, vocabulary=["knife", "fork"]) == "three forks"
    for seed in range(10):  # "hot dog" is one name: never "a hot cat"
        m = re.fullmatch(r"(a|an) (.+)", T.swap_object("a hot dog", 1, vocabulary="coco", rng=rng(seed)))
        assert m and m.group(2) in COCO - {"hot dog"}
    out = T.swap_object("a small red circle on the left", 1, rng=rng(4))
    assert out.split()[3] in set(world.SHAPES) - {"circle"} and out.split()[:3] == ["a", "small", "red"]


def test_swap_count_known_answers():
    outs = {T.swap_count("a man riding a horse", 1, rng=rng(i)) for i in range(20)}
    assert outs == {"two men riding a horse", "a man riding two horses"}
    assert T.swap_count("a man riding a horse", 2) == "two men riding two horses"
    assert T.swap_count("a photo of a cat", 5) == "a photo of two cats"  # "a photo of" has no countable head
    assert T.swap_count("a photo of a small red circle on the left", 3) == \
        "a photo of two small red circles on the left"
    numbers = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    outs = {T.swap_count("three dogs", 1, rng=rng(i)) for i in range(60)}
    assert outs <= {f"{n} dogs" for n in numbers if n != "three"} | {"one dog"} and "one dog" in outs
    assert len(outs) > 4
    assert T.swap_count("one bus", 1, rng=rng(0)).endswith("buses")
    assert T.swap_count("a person", 1) == "two people"
    assert T.swap_count('a sign that says "two cats"', 5).endswith('"two cats"')  # quotes untouched
    assert T.swap_count("a photo of the sky", 5) == "a photo of the sky"


@pytest.mark.parametrize("severity", range(6))
def test_swap_count_changes_min_severity_n_counts(severity):
    text = "a dog, two cats and a horse"
    count_words = {"a", "an", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
    for seed in range(5):
        out = T.swap_count(text, severity, rng=rng(seed))
        before = [w for w in text.replace(",", "").split() if w in count_words]
        after = [w for w in out.replace(",", "").split() if w in count_words]
        assert len(after) == 3
        assert sum(a != b for a, b in zip(before, after)) == min(severity, 3)


# ----------------------------------------------------------------------------------------------------
# Lists, seeds, templates
# ----------------------------------------------------------------------------------------------------


def test_perturb_texts_uses_the_engines_counter_based_seeds():
    texts = [f"a photo of a large dog number {i}" for i in range(10)]
    out = T.perturb_texts("char_insert", texts, 3, seed=11)
    key = T.text_key("char_insert", 3, {})
    for i, t in enumerate(texts):
        assert T.text_seed(11, key, i) == derive_seed(11, key, i)  # the same rule as vlmkit.runtime
        assert out[i] == T.char_insert(t, 3, rng=np.random.default_rng(derive_seed(11, key, i)))


@pytest.mark.parametrize("name", ALL)
def test_perturb_texts_is_independent_of_list_length_and_batching(name):
    texts = [SAMPLES[i % 4] for i in range(10)]
    full = T.perturb_texts(name, texts, 4, seed=3)
    assert T.perturb_texts(name, texts[:1], 4, seed=3) == full[:1]
    assert T.perturb_texts(name, texts[3:7], 4, seed=3, indices=range(3, 7)) == full[3:7]
    assert T.perturb_texts(name, texts, 4, seed=3) == full
    assert T.perturb_texts(name, texts, 0, seed=3) == texts


def test_perturb_texts_items_and_seeds_differ():
    same = ["a photo of a large dog on a red bed"] * 10
    assert len(set(T.perturb_texts("char_insert", same, 3, seed=0))) > 1  # one generator per index
    a = T.perturb_texts("char_insert", same, 3, seed=0)
    b = T.perturb_texts("char_insert", same, 3, seed=1)
    assert a != b
    assert T.perturb_texts("swap_color", ["a red car"], 1, seed=0, colors=["red", "blue"]) == ["a blue car"]


def test_perturb_texts_rejects_bad_inputs():
    with pytest.raises(InputError, match="texts must be a list"):
        T.perturb_texts("char_swap", "a red car", 1)
    with pytest.raises(InputError, match=r"texts\[1\]"):
        T.perturb_texts("char_swap", ["a", 2], 1)
    with pytest.raises(InputError, match="seed"):
        T.perturb_texts("char_swap", ["a"], 1, seed=-1)
    with pytest.raises(InputError, match="severity"):
        T.perturb_texts("char_swap", ["a"], 9)
    with pytest.raises(InputError, match="indices"):
        T.perturb_texts("char_swap", ["a", "b"], 1, indices=[0])
    with pytest.raises(RegistryError, match="char_swap"):
        T.perturb_texts("char_swaps", ["a"], 1)


@pytest.mark.parametrize("name", ALL)
def test_perturb_templates_keeps_the_placeholder(name):
    from vlmkit.data.classnames import openai_templates

    templates = openai_templates()
    for s in range(6):
        out = T.perturb_templates(name, templates, s, seed=s)
        assert len(out) == len(templates)
        for t, o in zip(templates, out):
            assert o.count("{}") == 1 and o.count("{") == 1 and o.count("}") == 1, (t, o)
            assert "DOG" in o.format("DOG")
        if s == 0:
            assert out == templates
    changed = sum(a != b for a, b in zip(templates, T.perturb_templates(name, templates, 5, seed=0)))
    # OpenAI's templates name no object or count outside the placeholder: those swaps act on class names
    assert changed == 0 if name in ("swap_count", "swap_object") else changed > 0
    with pytest.raises(InputError, match="keep_fields"):
        T.perturb_templates(name, templates, 1, keep_fields=False)


def test_keep_protects_literal_spans():
    text = "a photo of a {} in the snow"
    for name in ("char_delete", "char_swap", "keyboard_typo", "char_insert"):
        for seed in range(10):
            assert "photo" in TEXT_PERTURBATIONS.get(name)(text, 5, rng=rng(seed), keep="photo")
    assert T.synonym("a big dog", 5, keep="big") == "a big dog"
    for seed in range(10):
        assert "dog" in T.word_dropout("a big brown dog", 5, rng=rng(seed), keep=["dog"]).split()
    out = T.char_delete("a {} b {name} c", 5, rng=rng(0), keep_fields=True)
    assert "{}" in out and "{name}" in out


def test_plural_rules_and_irregulars():
    cases = {"dog": "dogs", "bus": "buses", "couch": "couches", "glass": "glasses", "cross": "crosses",
             "baby": "babies", "boy": "boys", "person": "people", "knife": "knives", "sheep": "sheep",
             "hot dog": "hot dogs", "wine glass": "wine glasses", "mouse": "mice"}
    assert {k: T.plural(k) for k in cases} == cases


# ----------------------------------------------------------------------------------------------------
# Toy-world meaning probes, checked against the renderer's ground truth
# ----------------------------------------------------------------------------------------------------


def _truth(scene: world.Scene) -> list[tuple[str, str, str, str]]:
    """The attributes of the objects a complete caption must name: >= 35 % of their pixels visible."""
    return sorted((o.shape, o.color, o.size, o.position) for o in scene.objects
                  if o.mask.sum() and o.visible.sum() / o.mask.sum() >= 0.35)


FLIP_KEY = {"color": 1, "shape": 0, "size": 2, "position": 3}


def test_meaning_probes_flips_are_false_and_rewordings_true_on_200_scenes():
    seen = Counter()
    for i in range(200):
        scene = world.sample_scene(21, i)
        probes = meaning_probes(scene, np.random.default_rng([21, i]))
        truth = _truth(scene)
        orig = _parsed_objects(probes["original"])
        assert probes["original"] == grammar.describe(scene)
        assert sorted(orig) == truth
        assert probes["preserving"] != probes["original"]
        assert _parsed_objects(probes["preserving"]) == orig  # same objects, other words
        pp, po = grammar.parse_prompt(probes["preserving"]), grammar.parse_prompt(probes["original"])
        assert (pp.word, pp.background, pp.blank_sign) == (po.word, po.background, po.blank_sign)
        assert "count" in probes
        for kind, caption in probes.items():
            if kind in ("original", "preserving"):
                continue
            seen[kind] += 1
            flipped = _parsed_objects(caption)
            assert sorted(flipped) != truth, (kind, caption, truth)  # false of the scene
            if kind == "count":
                assert abs(len(flipped) - len(orig)) == 1
                small, big = sorted((flipped, orig), key=len)
                assert not Counter(small) - Counter(big)  # one object left out or added, rest as said
                continue
            assert len(flipped) == len(orig)
            diffs = [(a, b) for a, b in zip(flipped, orig) if a != b]
            assert len(diffs) == 1, (kind, caption)  # one object edited ...
            a, b = diffs[0]
            k = FLIP_KEY[kind]
            assert a[k] != b[k] and a[:k] + a[k + 1:] == b[:k] + b[k + 1:]  # ... in exactly that attribute
            if kind == "position":
                assert a[3] not in {o.position for o in scene.objects}
        assert caption_holds(probes["original"], scene) and not caption_holds(probes["count"], scene)
    assert min(seen[k] for k in ("color", "shape", "size", "position", "count")) > 100


def test_meaning_probes_are_deterministic_and_check_their_rng():
    scene = world.sample_scene(0, 3)
    assert meaning_probes(scene, rng(4)) == meaning_probes(scene, rng(4))
    with pytest.raises(TypeError, match="rng"):
        meaning_probes(scene, 4)


def test_probe_set_table_and_images():
    images, table = probe_set(6, seed=2)
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    scenes, table2 = probe_set(6, seed=2, return_scenes=True)
    assert table2 == table
    assert np.array_equal(np.stack([s.image for s in scenes]), images)
    assert {r["index"] for r in table} == set(range(6))
    for r in table:
        assert set(r) == {"index", "kind", "caption", "preserves_meaning"}
        assert r["kind"] in PROBE_KINDS
        assert r["preserves_meaning"] == (r["kind"] in ("original", "preserving"))
        assert caption_holds(r["caption"], scenes[r["index"]]) == r["preserves_meaning"]
    for i in range(6):
        kinds = [r["kind"] for r in table if r["index"] == i]
        assert kinds[:2] == ["original", "preserving"] and kinds == [k for k in PROBE_KINDS if k in kinds]
    with pytest.raises(ValueError, match="n="):
        probe_set(0)
