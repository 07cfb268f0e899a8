"""Generate the toy German→English corpus in ``data/toy/``.

This project makes its own small parallel corpus, from the grammar and lexicon in this file, so
that the quick start, the examples and the tests run offline: nothing is downloaded, and the
files can be rebuilt byte for byte from the seed (``random.Random(seed)``, standard library only).

The German is real German grammar on a small vocabulary, not word-for-word substitution:

* gender, number and case (nominative, accusative, dative) on articles (der/die/das, ein/eine,
  kein) and on adjectives, with strong, weak and mixed declension;
* verb agreement in all six persons of the present tense, vowel changes included (sieht, liest);
* verb-second order, also after a fronted adverb, phrase or clause ("Heute sieht der Hund die
  Katze."), verb-first yes/no questions and verb-final subordinate clauses (weil, wenn, obwohl,
  dass);
* negation with "nicht" and "kein"; prepositions that govern the dative or the accusative,
  two-way prepositions included ("im Haus" / "ins Haus"), with their contractions;
* coordination of noun phrases and of clauses with "und" and "aber".

Each sentence pair comes from one derivation, realised once in German and once in English, so
every German sentence has exactly one English translation, and a small model can learn the
mapping in minutes. Sentences come at four levels (LEVELS), from three-word statements and
questions to two clauses with adjectives and phrases (up to 25 words); the short ones are the
most frequent. All German sentences are distinct, so no dev or test sentence occurs in train.

Usage: ``python data/generate.py [--out DIR] [--seed N] [--train N] [--dev N] [--test N]``
"""

import argparse
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

MIN_WORDS, MAX_WORDS = 3, 25  # German words per sentence, punctuation attached
ANY = "human animal thing food place"
ANIMATE = "human animal"

# --------------------------------------------------------------------------------------------
# Lexicon
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Noun:
    gender: str  # "m", "f" or "n"
    de: str
    de_pl: str
    en: str
    en_pl: str
    kinds: frozenset[str]  # what it is: human, animal, thing, food, place; text, open
    spots: frozenset[str]  # which spatial prepositions it can follow (Preposition.tag)

    def german(self, plural: bool, case: str) -> str:
        if not plural:
            return self.de
        if case == "dat" and not self.de_pl.endswith(("n", "s")):
            return self.de_pl + "n"  # dative plural: den Hunden, den Kindern
        return self.de_pl


def _noun(spec: str, kinds: str, spots: str = "") -> Noun:
    gender, de, de_pl, en, en_pl = spec.split()
    return Noun(gender, de, de_pl, en, en_pl, frozenset(kinds.split()), frozenset(spots.split()))


NOUNS = (
    _noun("m Hund Hunde dog dogs", "animal"),
    _noun("f Katze Katzen cat cats", "animal"),
    _noun("m Vogel Vögel bird birds", "animal"),
    _noun("n Pferd Pferde horse horses", "animal"),
    _noun("f Maus Mäuse mouse mice", "animal"),
    _noun("m Mann Männer man men", "human", "by to"),
    _noun("f Frau Frauen woman women", "human", "by to"),
    _noun("n Kind Kinder child children", "human", "by to"),
    _noun("n Mädchen Mädchen girl girls", "human", "by to"),
    _noun("m Lehrer Lehrer teacher teachers", "human", "by to"),
    _noun("m Arzt Ärzte doctor doctors", "human", "by to"),
    _noun("m Onkel Onkel uncle uncles", "human", "by to"),
    _noun("f Schwester Schwestern sister sisters", "human", "by to"),
    _noun("m Freund Freunde friend friends", "human", "by to"),
    _noun("m Ball Bälle ball balls", "thing"),
    _noun("m Tisch Tische table tables", "thing", "on onto under by"),
    _noun("m Stuhl Stühle chair chairs", "thing", "on onto under by"),
    _noun("m Brief Briefe letter letters", "thing text open"),
    _noun("n Buch Bücher book books", "thing text open"),
    _noun("f Zeitung Zeitungen newspaper newspapers", "thing text"),
    _noun("f Tasche Taschen bag bags", "thing open", "in"),
    _noun("f Lampe Lampen lamp lamps", "thing", "by"),
    _noun("f Uhr Uhren clock clocks", "thing"),
    _noun("f Tür Türen door doors", "thing open", "by"),
    _noun("n Fenster Fenster window windows", "thing open", "by"),
    _noun("n Bild Bilder picture pictures", "thing"),
    _noun("n Auto Autos car cars", "thing open", "in into by"),
    _noun("n Schiff Schiffe ship ships", "thing", "on"),
    _noun("n Glas Gläser glass glasses", "thing"),
    _noun("f Blume Blumen flower flowers", "thing"),
    _noun("m Apfel Äpfel apple apples", "food"),
    _noun("n Ei Eier egg eggs", "food"),
    _noun("m Kuchen Kuchen cake cakes", "food"),
    _noun("m Baum Bäume tree trees", "thing", "under by to"),
    _noun("n Haus Häuser house houses", "place", "in into by to through"),
    _noun("m Garten Gärten garden gardens", "place", "in into to through"),
    _noun("f Stadt Städte city cities", "place", "in into to through"),
    _noun("f Schule Schulen school schools", "place", "in into by to"),
    _noun("n Zimmer Zimmer room rooms", "place", "in into through"),
    _noun("f Straße Straßen street streets", "place", "on"),
    _noun("m Park Parks park parks", "place", "in into to through"),
)


@dataclass(frozen=True)
class Adjective:
    de: str  # the stem, also the predicative form
    en: str
    rank: int  # attributive order, the same in both languages: quality, size, age, colour
    kinds: frozenset[str]  # nouns it may describe


def _adjective(de: str, en: str, rank: int, kinds: str) -> Adjective:
    return Adjective(de, en, rank, frozenset(kinds.split()))


ADJECTIVES = (
    _adjective("schön", "beautiful", 0, ANY),
    _adjective("hungrig", "hungry", 0, ANIMATE),
    _adjective("groß", "big", 1, ANY),
    _adjective("klein", "small", 1, ANY),
    _adjective("alt", "old", 2, "human animal thing place"),
    _adjective("jung", "young", 2, ANIMATE),
    _adjective("neu", "new", 2, "thing place"),
    _adjective("rot", "red", 3, "thing food place"),
    _adjective("blau", "blue", 3, "thing"),
    _adjective("grün", "green", 3, "thing food place"),
    _adjective("gelb", "yellow", 3, "thing food"),
    _adjective("schwarz", "black", 3, "thing animal"),
    _adjective("weiß", "white", 3, "thing animal place"),
)


@dataclass(frozen=True)
class Pronoun:
    nom: str
    acc: str
    dat: str
    en_subject: str
    en_object: str
    person: int
    plural: bool
    kinds: frozenset[str]  # what it may stand for as a subject
    object_cases: frozenset[str]  # cases in which it is used as an object (none: ambiguous)


def _pronoun(forms: str, person: int, plural: bool, kinds: str, object_cases: str) -> Pronoun:
    sets = frozenset(kinds.split()), frozenset(object_cases.split())
    return Pronoun(*forms.split(), person, plural, *sets)


# English "he" and "she" are people, so er/sie are; accusative sie (her/them), es and dative
# ihm for es (it) would be ambiguous objects and are not used as objects.
PRONOUNS = (
    _pronoun("ich mich mir I me", 1, False, "human", "acc dat"),
    _pronoun("du dich dir you you", 2, False, "human", "acc dat"),
    _pronoun("er ihn ihm he him", 3, False, "human", "acc dat"),
    _pronoun("sie sie ihr she her", 3, False, "human", "dat"),
    _pronoun("es es ihm it it", 3, False, "animal thing", ""),
    _pronoun("wir uns uns we us", 1, True, "human", "acc dat"),
    _pronoun("ihr euch euch you you", 2, True, "human", "acc dat"),
    _pronoun("sie sie ihnen they them", 3, True, ANY, "dat"),
)

NUMBERS = (("zwei", "two"), ("drei", "three"), ("vier", "four"), ("fünf", "five"))


@dataclass(frozen=True)
class Adverb:
    de: str
    en: str
    kind: str  # "time": English puts it last; "often": English puts it before the verb


ADVERBS = (
    Adverb("heute", "today", "time"),
    Adverb("jetzt", "now", "time"),
    Adverb("oft", "often", "often"),
    Adverb("immer", "always", "often"),
    Adverb("manchmal", "sometimes", "often"),
)


@dataclass(frozen=True)
class Preposition:
    de: str
    case: str  # the case it governs
    en: str
    role: str  # "where", "whither" (motion), "with", "for" or "modifier" (inside a noun phrase)
    tag: str  # the Noun.spots entry its object needs; "" for any noun of the right kind


PREPOSITIONS = (
    Preposition("in", "dat", "in", "where", "in"),
    Preposition("auf", "dat", "on", "where", "on"),
    Preposition("unter", "dat", "under", "where", "under"),
    Preposition("neben", "dat", "next to", "where", "by"),
    Preposition("hinter", "dat", "behind", "where", "by"),
    Preposition("vor", "dat", "in front of", "where", "by"),
    Preposition("in", "acc", "into", "whither", "into"),
    Preposition("auf", "acc", "onto", "whither", "onto"),
    Preposition("zu", "dat", "to", "whither", "to"),
    Preposition("durch", "acc", "through", "whither", "through"),
    Preposition("mit", "dat", "with", "with", ""),
    Preposition("für", "acc", "for", "for", ""),
    Preposition("mit", "dat", "with", "modifier", ""),
    Preposition("ohne", "acc", "without", "modifier", ""),
)

CONTRACTIONS = {  # preposition + definite article
    ("in", "dem"): "im",
    ("in", "das"): "ins",
    ("zu", "dem"): "zum",
    ("zu", "der"): "zur",
}


@dataclass(frozen=True)
class Verb:
    de: tuple[str, ...]  # ich, du, er/sie/es, wir, ihr, sie
    en: str  # base form
    en3: str  # third person singular
    frame: str  # "intr", "move", "acc", "dat", "give", "that" (dass clause) or "be"
    subject: frozenset[str]  # kinds of subject
    object: frozenset[str]  # kinds of the (accusative, or dative for "dat") object
    recipient: frozenset[str]  # kinds of the dative object of "give" verbs


def conjugate(infinitive: str, du: str | None = None, er: str | None = None) -> tuple[str, ...]:
    """Present tense forms (ich, du, er, wir, ihr, sie) of a verb in -en; ``du``/``er`` give
    vowel-changing forms (siehst, sieht)."""
    stem = infinitive[:-2]
    linking_e = stem.endswith(("t", "d", "ffn"))  # arbeitest, findet, öffnet
    hissing = stem.endswith(("s", "ß", "z"))
    plain_t = stem + ("et" if linking_e else "t")
    plain_st = stem + ("est" if linking_e else "t" if hissing else "st")
    return (stem + "e", du or plain_st, er or plain_t, infinitive, plain_t, infinitive)


def _verb(
    de: str | tuple[str, ...],
    en: str,
    frame: str,
    subject: str,
    obj: str = "",
    recipient: str = "",
    du: str | None = None,
    er: str | None = None,
) -> Verb:
    forms = conjugate(de, du, er) if isinstance(de, str) else de
    kinds = (frozenset(words.split()) for words in (subject, obj, recipient))
    return Verb(forms, *en.split("/"), frame, *kinds)


VERBS = (
    _verb("schlafen", "sleep/sleeps", "intr", ANIMATE, du="schläfst", er="schläft"),
    _verb("lachen", "laugh/laughs", "intr", "human"),
    _verb("arbeiten", "work/works", "intr", "human"),
    _verb("singen", "sing/sings", "intr", ANIMATE),
    _verb("spielen", "play/plays", "intr", ANIMATE),
    _verb("laufen", "run/runs", "move", ANIMATE, du="läufst", er="läuft"),
    _verb("gehen", "walk/walks", "move", ANIMATE),
    _verb("fahren", "drive/drives", "move", "human", du="fährst", er="fährt"),
    _verb("sehen", "see/sees", "acc", ANIMATE, ANY, du="siehst", er="sieht"),
    _verb("lesen", "read/reads", "acc", "human", "text", du="liest", er="liest"),
    _verb("essen", "eat/eats", "acc", ANIMATE, "food", du="isst", er="isst"),
    _verb("kaufen", "buy/buys", "acc", "human", "thing food animal"),
    _verb("suchen", "look for/looks for", "acc", ANIMATE, ANY),
    _verb("finden", "find/finds", "acc", ANIMATE, ANY),
    _verb("brauchen", "need/needs", "acc", "human", "thing food"),
    _verb("lieben", "love/loves", "acc", ANIMATE, ANIMATE),
    _verb("öffnen", "open/opens", "acc", "human", "open"),
    _verb("schreiben", "write/writes", "acc", "human", "text"),
    _verb("tragen", "carry/carries", "acc", "human", "thing food animal", du="trägst", er="trägt"),
    _verb("haben", "have/has", "acc", ANIMATE, "thing food animal", du="hast", er="hat"),
    _verb("helfen", "help/helps", "dat", ANIMATE, "human", du="hilfst", er="hilft"),
    _verb("danken", "thank/thanks", "dat", "human", "human"),
    _verb("folgen", "follow/follows", "dat", ANIMATE, ANIMATE),
    _verb("geben", "give/gives", "give", "human", "thing food", ANIMATE, du="gibst", er="gibt"),
    _verb("zeigen", "show/shows", "give", "human", "thing food animal place", "human"),
    _verb(("weiß", "weißt", "weiß", "wissen", "wisst", "wissen"), "know/knows", "that", "human"),
    _verb("glauben", "believe/believes", "that", "human"),
    _verb("sagen", "say/says", "that", "human"),
    _verb(("bin", "bist", "ist", "sind", "seid", "sind"), "be/is", "be", ANY),
)

# --------------------------------------------------------------------------------------------
# Inflection tables
# --------------------------------------------------------------------------------------------

DEFINITE = {
    "nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
    "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
    "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"},
}
INDEFINITE = {  # ein/eine; kein adds "k" and has plural forms
    "nom": {"m": "ein", "f": "eine", "n": "ein", "pl": "eine"},
    "acc": {"m": "einen", "f": "eine", "n": "ein", "pl": "eine"},
    "dat": {"m": "einem", "f": "einer", "n": "einem", "pl": "einen"},
}
ENDINGS = {  # adjective endings by declension, case and gender/plural
    "weak": {  # after der/die/das
        "nom": {"m": "e", "f": "e", "n": "e", "pl": "en"},
        "acc": {"m": "en", "f": "e", "n": "e", "pl": "en"},
        "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
    },
    "mixed": {  # after ein/kein
        "nom": {"m": "er", "f": "e", "n": "es", "pl": "en"},
        "acc": {"m": "en", "f": "e", "n": "es", "pl": "en"},
        "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"},
    },
    "strong": {  # no article, or only a number
        "nom": {"m": "er", "f": "e", "n": "es", "pl": "e"},
        "acc": {"m": "en", "f": "e", "n": "es", "pl": "e"},
        "dat": {"m": "em", "f": "er", "n": "em", "pl": "en"},
    },
}
DECLENSION = {"the": "weak", "a": "mixed", "no": "mixed", "bare": "strong", "number": "strong"}

# --------------------------------------------------------------------------------------------
# Phrases: each is realised in German (by case) and in English (by role)
# --------------------------------------------------------------------------------------------


class Phrase:
    """What subjects and objects share: a noun phrase, a pronoun or two joined by "und"."""

    person = 3
    plural: bool
    is_pronoun = False
    det: str  # the article: see NounPhrase; "pronoun" and "and" for the others
    kinds: frozenset[str]

    def german(self, case: str) -> list[str]:
        raise NotImplementedError

    def english(self, role: str = "subject") -> list[str]:
        """``role``: "subject", "object" or "negated" (see NounPhrase.english)."""
        raise NotImplementedError


@dataclass(frozen=True)
class PrepPhrase:
    preposition: Preposition
    object: Phrase  # a noun phrase or a pronoun

    def german(self) -> list[str]:
        words = self.object.german(self.preposition.case)
        contracted = CONTRACTIONS.get((self.preposition.de, words[0]))
        if contracted and self.object.det == "the":
            return [contracted] + words[1:]  # in dem Haus -> im Haus, zu der Schule -> zur Schule
        return [self.preposition.de] + words

    def english(self) -> list[str]:
        return self.preposition.en.split() + self.object.english("object")


@dataclass(frozen=True)
class NounPhrase(Phrase):
    noun: Noun
    det: str  # "the", "a", "no" (kein), "bare" (plural, no article) or "number"
    plural: bool
    adjectives: tuple[Adjective, ...] = ()
    number: tuple[str, str] | None = None  # (German, English) when det == "number"
    modifier: PrepPhrase | None = None  # "der Mann mit dem Hund"

    @property
    def kinds(self) -> frozenset[str]:
        return self.noun.kinds

    def german(self, case: str) -> list[str]:
        slot = "pl" if self.plural else self.noun.gender
        words = []
        if self.det == "the":
            words.append(DEFINITE[case][slot])
        elif self.det in ("a", "no"):
            words.append(("k" if self.det == "no" else "") + INDEFINITE[case][slot])
        elif self.det == "number":
            words.append(self.number[0])
        ending = ENDINGS[DECLENSION[self.det]][case][slot]
        words += [adjective.de + ending for adjective in self.adjectives]
        words.append(self.noun.german(self.plural, case))
        if self.modifier:
            words += self.modifier.german()
        return words

    def english(self, role: str = "subject") -> list[str]:
        """``role`` "negated" is a kein-object under English clause negation: a / any."""
        if self.det == "the":
            words = ["the"]
        elif self.det == "a":
            words = ["a"]  # "an" is chosen when the sentence is finished
        elif self.det == "no":
            words = ["no"] if role != "negated" else ["any"] if self.plural else ["a"]
        elif self.det == "number":
            words = [self.number[1]]
        else:
            words = []
        words += [adjective.en for adjective in self.adjectives]
        words.append(self.noun.en_pl if self.plural else self.noun.en)
        if self.modifier:
            words += self.modifier.english()
        return words


@dataclass(frozen=True)
class PronounPhrase(Phrase):
    pronoun: Pronoun

    is_pronoun = True
    det = "pronoun"

    @property
    def person(self) -> int:
        return self.pronoun.person

    @property
    def plural(self) -> bool:
        return self.pronoun.plural

    @property
    def kinds(self) -> frozenset[str]:
        return self.pronoun.kinds

    def german(self, case: str) -> list[str]:
        return [getattr(self.pronoun, case)]

    def english(self, role: str = "subject") -> list[str]:
        return [self.pronoun.en_subject if role == "subject" else self.pronoun.en_object]


@dataclass(frozen=True)
class Coordination(Phrase):
    """Two noun phrases joined by "und"; as a subject it takes a plural verb."""

    left: NounPhrase
    right: NounPhrase

    plural = True
    det = "and"

    @property
    def kinds(self) -> frozenset[str]:
        return self.left.kinds & self.right.kinds

    def german(self, case: str) -> list[str]:
        return self.left.german(case) + ["und"] + self.right.german(case)

    def english(self, role: str = "subject") -> list[str]:
        return self.left.english(role) + ["and"] + self.right.english(role)


# --------------------------------------------------------------------------------------------
# Clauses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    verb: Verb
    subject: Phrase
    object: Phrase | None = None  # accusative object, or the dative object of "dat" verbs
    recipient: Phrase | None = None  # dative object of "give" verbs
    predicate: Adjective | None = None  # "ist groß"
    place: PrepPhrase | None = None  # adverbial phrase; the predicate of "sein" when no adjective
    adverb: Adverb | None = None
    negated: bool = False  # "nicht"

    @property
    def object_case(self) -> str:
        return "dat" if self.verb.frame == "dat" else "acc"

    @property
    def kein_object(self) -> bool:
        return self.object is not None and self.object.det == "no"

    @property
    def can_invert(self) -> bool:
        """Whether the subject may follow the verb. A pronoun object would come before a full
        noun subject there ("Heute sieht ihn der Hund"); such clauses are left out."""
        objects = (self.object, self.recipient)
        return self.subject.is_pronoun or not any(o and o.is_pronoun for o in objects)

    def finite_german(self) -> str:
        index = self.subject.person - 1 + (3 if self.subject.plural else 0)
        return self.verb.de[index]

    def middle_german(self, subject: bool = True, adverb: bool = True, place: bool = True):
        """The middle field: subject, pronoun objects, adverb, noun objects, nicht, predicate."""
        words = self.subject.german("nom") if subject else []
        objects = [(self.recipient, "dat"), (self.object, self.object_case)]
        objects = [(phrase, case) for phrase, case in objects if phrase]
        for phrase, case in objects:
            if phrase.is_pronoun:
                words += phrase.german(case)
        if self.adverb and adverb:
            words.append(self.adverb.de)
        for phrase, case in objects:
            if not phrase.is_pronoun:
                words += phrase.german(case)
        if self.negated:
            words.append("nicht")
        if self.predicate:
            words.append(self.predicate.de)
        if self.place and place:
            words += self.place.german()
        return words

    def german(self, order: str, front: str = "subject") -> list[str]:
        """``order``: "v2" (statement, ``front`` is "subject", "adverb" or "place"), "v1"
        (question, or a main clause after a fronted subordinate clause) or "final"."""
        finite = self.finite_german()
        if order == "final":
            return self.middle_german() + [finite]
        if order == "v1":
            return [finite] + self.middle_german()
        if front == "adverb":
            return [self.adverb.de, finite] + self.middle_german(adverb=False)
        if front == "place":
            return self.place.german() + [finite] + self.middle_german(place=False)
        return self.subject.german("nom") + [finite] + self.middle_german(subject=False)

    def english(self, question: bool = False, front: str = "subject") -> list[str]:
        """English order: subject, (do not / often) verb, objects, predicate, place, time."""
        subject = self.subject.english("subject")
        singular3 = self.subject.person == 3 and not self.subject.plural
        often = [self.adverb.en] if self.adverb and self.adverb.kind == "often" else []
        if self.verb.frame == "be":
            first_singular = self.subject.person == 1 and not self.subject.plural
            be = "is" if singular3 else "am" if first_singular else "are"
            rest = often + ([self.predicate.en] if self.predicate else [])
            not_ = ["not"] if self.negated else []
            head = [be] + subject if question else subject + [be] + not_
        else:
            objects = self.recipient.english("object") if self.recipient else []
            if self.object:
                objects += self.object.english("negated" if self.kein_object else "object")
            do = "does" if singular3 else "do"
            if question:
                head, rest = [do] + subject, often + self.verb.en.split() + objects
            elif self.negated or self.kein_object:
                head, rest = subject + [do, "not"], self.verb.en.split() + objects
            else:
                head, rest = subject, often + (self.verb.en3 if singular3 else self.verb.en).split()
                rest += objects
        place = self.place.english() if self.place else []
        time = [self.adverb.en] if self.adverb and self.adverb.kind == "time" else []
        if front == "adverb":
            return time + head + rest + place
        if front == "place":
            return place + head + rest + time
        return head + rest + place + time


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """How elaborate a sentence may be. Most sentences are short, so that a small model learns
    the grammar; fewer are long (up to MAX_WORDS words)."""

    weight: float  # share of the corpus
    patterns: dict[str, float]  # sentence patterns (see PATTERNS) and their weights
    adjectives: tuple[float, float, float]  # weights of 0, 1 and 2 adjectives per noun phrase
    place: float  # chance of a prepositional phrase in a clause
    adverb: float  # chance of an adverb in a clause
    modifier: float  # chance of "mit/ohne ..." inside a subject or object


LEVELS = (
    Level(  # "Der Hund sieht die Katze." "Heute schläft er." "Schläft er?"
        weight=0.34,
        patterns={"statement": 3, "question": 1},
        adjectives=(1, 0, 0),
        place=0.0,
        adverb=0.2,
        modifier=0.0,
    ),
    Level(  # "Heute liest die alte Frau im Garten ein Buch."
        weight=0.30,
        patterns={"statement": 5, "question": 1, "wh_question": 1},
        adjectives=(6, 3, 0),
        place=0.35,
        adverb=0.3,
        modifier=0.0,
    ),
    Level(  # "Der Mann sagt, dass der Hund nicht schläft."
        weight=0.24,
        patterns={
            "coordination": 3,
            "subordinate": 3,
            "fronted_subordinate": 2,
            "that": 2,
            "that_q": 1,
        },
        adjectives=(8, 2, 0),
        place=0.15,
        adverb=0.15,
        modifier=0.0,
    ),
    Level(  # two clauses with adjectives, phrases and adverbs: up to MAX_WORDS words
        weight=0.12,
        patterns={
            "statement": 1,
            "coordination": 2,
            "subordinate": 2,
            "fronted_subordinate": 2,
            "that": 2,
        },
        adjectives=(5, 4, 1),
        place=0.45,
        adverb=0.3,
        modifier=0.1,
    ),
)
FRAME_WEIGHTS = {"intr": 0.14, "move": 0.12, "acc": 0.38, "dat": 0.1, "give": 0.1, "be": 0.16}


def pick(rng: random.Random, weighted: dict[str, float]) -> str:
    """One key of ``weighted``, drawn with the given weights."""
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def nouns_of(kinds: frozenset[str], spot: str = "") -> list[Noun]:
    return [n for n in NOUNS if n.kinds & kinds and (not spot or spot in n.spots)]


def sample_adjectives(
    rng: random.Random, noun: Noun, weights: Sequence[float]
) -> tuple[Adjective, ...]:
    count = rng.choices(range(len(weights)), weights=weights)[0]
    chosen: list[Adjective] = []
    for adjective in rng.sample(ADJECTIVES, len(ADJECTIVES)):
        if len(chosen) == count:
            break
        if adjective.kinds & noun.kinds and all(a.rank != adjective.rank for a in chosen):
            chosen.append(adjective)
    return tuple(sorted(chosen, key=lambda a: a.rank))


def sample_noun_phrase(
    rng: random.Random,
    kinds: frozenset[str],
    level: Level,
    spot: str = "",
    simple: bool = False,
) -> NounPhrase:
    """A noun of one of ``kinds`` (and fitting ``spot``) with article and adjectives;
    ``simple``: der/ein, fewer plurals, at most one adjective (objects of prepositions)."""
    noun = rng.choice(nouns_of(kinds, spot))
    plural = rng.random() < (0.1 if simple else 0.25)
    if plural:
        det = "the" if simple else pick(rng, {"the": 0.5, "bare": 0.25, "number": 0.25})
    else:
        det = pick(rng, {"the": 0.7, "a": 0.3} if simple else {"the": 0.6, "a": 0.4})
    number = rng.choice(NUMBERS) if det == "number" else None
    adjectives = sample_adjectives(rng, noun, level.adjectives[:2] if simple else level.adjectives)
    phrase = NounPhrase(noun, det, plural, adjectives, number)
    if not simple and rng.random() < level.modifier:
        preposition = rng.choice([p for p in PREPOSITIONS if p.role == "modifier"])
        inner = sample_noun_phrase(rng, frozenset(("animal", "thing")), level, simple=True)
        phrase = replace(phrase, modifier=PrepPhrase(preposition, inner))
    return phrase


def sample_pronoun(
    rng: random.Random, kinds: frozenset[str], case: str = "nom"
) -> PronounPhrase | None:
    if case == "nom":
        fits = [p for p in PRONOUNS if p.kinds & kinds]
    else:
        fits = [p for p in PRONOUNS if case in p.object_cases]
    return PronounPhrase(rng.choice(fits)) if fits else None


def sample_argument(
    rng: random.Random, kinds: frozenset[str], case: str, level: Level, pronoun: float = 0.15
) -> Phrase:
    """A subject (case "nom") or object: a pronoun, a noun phrase or, for subjects, "X und Y"."""
    if rng.random() < pronoun and (case == "nom" or "human" in kinds):
        found = sample_pronoun(rng, kinds, case)
        if found:
            return found
    if case == "nom" and rng.random() < 0.05:
        left = sample_noun_phrase(rng, kinds, level, simple=True)
        right = sample_noun_phrase(rng, left.noun.kinds, level, simple=True)
        if left.noun != right.noun:
            return Coordination(left, right)
    return sample_noun_phrase(rng, kinds, level)


def sample_place(
    rng: random.Random, roles: Sequence[str], level: Level, kinds: str = ANY
) -> PrepPhrase:
    """A phrase for one of ``roles``; where/whither phrases take a noun of ``kinds``."""
    spatial = frozenset(kinds.split())
    fitting = [
        p
        for p in PREPOSITIONS
        if p.role in roles and (p.role not in ("where", "whither") or nouns_of(spatial, p.tag))
    ]
    preposition = rng.choice(fitting)
    if preposition.role == "for":
        human = frozenset(["human"])
        if rng.random() < 0.3:
            return PrepPhrase(preposition, sample_pronoun(rng, human, "acc"))
        return PrepPhrase(preposition, sample_noun_phrase(rng, human, level, simple=True))
    if preposition.role == "with":
        company = frozenset(("animal", "thing"))
        return PrepPhrase(preposition, sample_noun_phrase(rng, company, level, simple=True))
    spot = sample_noun_phrase(rng, spatial, level, preposition.tag, simple=True)
    return PrepPhrase(preposition, spot)


def negate(clause: Clause) -> Clause:
    """Negate with kein (an indefinite accusative object) or else nicht. A dative indefinite
    object becomes definite: "nicht einem Mann" is not idiomatic."""
    recipient = clause.recipient
    if recipient and recipient.det in ("a", "bare", "number"):
        recipient = replace(recipient, det="the", number=None)
    obj = clause.object
    if obj and obj.det in ("a", "bare", "number"):
        if clause.object_case == "acc":
            return replace(clause, recipient=recipient, object=replace(obj, det="no", number=None))
        obj = replace(obj, det="the", number=None)
    return replace(clause, recipient=recipient, object=obj, negated=True)


def sample_clause(
    rng: random.Random, level: Level, question: bool = False, invert: bool = False
) -> Clause:
    """A random clause; ``question`` and ``invert`` keep out what those orders do not allow."""
    frame = pick(rng, FRAME_WEIGHTS)
    verb = rng.choice([v for v in VERBS if v.frame == frame])
    subject = sample_argument(rng, verb.subject, "nom", level, pronoun=0.22)
    clause = Clause(verb, subject)
    pronouns_ok = subject.is_pronoun or not invert  # see Clause.can_invert
    if frame in ("acc", "dat", "give"):
        case = "dat" if frame == "dat" else "acc"
        pronoun = 0.15 if pronouns_ok and frame != "give" else 0.0
        clause = replace(clause, object=sample_argument(rng, verb.object, case, level, pronoun))
    if frame == "give":
        pronoun = 0.3 if pronouns_ok else 0.0
        recipient = sample_argument(rng, verb.recipient, "dat", level, pronoun)
        clause = replace(clause, recipient=recipient)
    if frame == "be":
        used = {a.rank for a in getattr(subject, "adjectives", ())}  # not "der rote Ball ist blau"
        adjectives = [a for a in ADJECTIVES if a.kinds & subject.kinds and a.rank not in used]
        if rng.random() < 0.6 and adjectives:
            clause = replace(clause, predicate=rng.choice(adjectives))
        else:
            clause = replace(clause, place=sample_place(rng, ["where"], level))
    elif frame == "move" and rng.random() < max(level.place, 0.5):
        roles = [rng.choice(["whither", "whither", "where"])]
        place = sample_place(rng, roles, level, kinds="place human")  # not "into the bag"
        clause = replace(clause, place=place)
    elif frame != "move" and rng.random() < level.place:
        roles = ["where", "with"] + (["for"] if frame in ("acc", "give") else [])
        clause = replace(clause, place=sample_place(rng, roles, level))
    if rng.random() < level.adverb:
        clause = replace(clause, adverb=rng.choice(ADVERBS))
    negatable = not question and not (clause.adverb and clause.adverb.kind == "often")
    if negatable and rng.random() < 0.2:
        clause = negate(clause)
    elif not question and subject.det == "a" and rng.random() < 0.1:
        clause = replace(clause, subject=replace(subject, det="no"))  # "Kein Hund schläft."
    return clause


# --------------------------------------------------------------------------------------------
# Sentences: each pattern returns German and English words; punctuation is added at the end
# --------------------------------------------------------------------------------------------

Words = tuple[list[str], list[str]]


def statement(rng: random.Random, level: Level) -> Words:
    """Verb second, after the subject or a fronted time adverb or place."""
    clause = sample_clause(rng, level)
    front = "subject"
    if clause.can_invert and rng.random() < 0.5:
        if clause.adverb and clause.adverb.kind == "time":
            front = "adverb"
        elif clause.place and clause.place.preposition.role == "where":
            front = "place" if clause.verb.frame != "be" else "subject"  # "ist im Garten" stays
    return clause.german("v2", front), clause.english(front=front)


def yes_no_question(rng: random.Random, level: Level) -> Words:
    clause = sample_clause(rng, level, question=True, invert=True)
    return clause.german("v1"), clause.english(question=True)


QUESTION_WORDS = (("warum", "why"), ("wann", "when"), ("wo", "where"))


def wh_question(rng: random.Random, level: Level) -> Words:
    clause = sample_clause(rng, level, question=True, invert=True)
    de, en = rng.choice(QUESTION_WORDS)
    if en == "when":
        clause = replace(clause, adverb=None)
    if en == "where":
        clause = replace(clause, place=None, predicate=None)  # "Wo ist der Hund?"
    return [de] + clause.german("v1"), [en] + clause.english(question=True)


def coordination(rng: random.Random, level: Level) -> Words:
    """Two main clauses joined by "und" or ", aber"."""
    first, second = sample_clause(rng, level), sample_clause(rng, level)
    if first.subject == second.subject:
        return coordination(rng, level)
    de, en = (["und"], ["and"]) if rng.random() < 0.7 else ([",", "aber"], [",", "but"])
    return (
        first.german("v2") + de + second.german("v2"),
        first.english() + en + second.english(),
    )


SUBORDINATORS = (("weil", "because"), ("wenn", "when"), ("obwohl", "although"))


def subordinate(rng: random.Random, level: Level) -> Words:
    """A main clause, a comma and a verb-final clause: "..., weil der Mann das Buch liest." """
    main, sub = sample_clause(rng, level), sample_clause(rng, level)
    de, en = rng.choice(SUBORDINATORS)
    return (
        main.german("v2") + [",", de] + sub.german("final"),
        main.english() + [",", en] + sub.english(),
    )


def fronted_subordinate(rng: random.Random, level: Level) -> Words:
    """The subordinate clause fills the first position, so the main verb comes right after it."""
    sub, main = sample_clause(rng, level), sample_clause(rng, level, invert=True)
    de, en = rng.choice(SUBORDINATORS)
    return (
        [de] + sub.german("final") + [","] + main.german("v1"),
        [en] + sub.english() + [","] + main.english(),
    )


def that_clause(rng: random.Random, level: Level, question: bool = False) -> Words:
    """ "Der Mann sagt, dass der Hund schläft." or "Weißt du, dass ...?" """
    verb = rng.choice([v for v in VERBS if v.frame == "that"])
    main = Clause(verb, sample_argument(rng, verb.subject, "nom", level, pronoun=0.35))
    sub = sample_clause(rng, level)
    german = main.german("v1" if question else "v2") + [",", "dass"] + sub.german("final")
    return german, main.english(question=question) + ["that"] + sub.english()


Pattern = Callable[[random.Random, Level], Words]
PATTERNS: dict[str, tuple[Pattern, str]] = {  # name: (make, final punctuation)
    "statement": (statement, "."),
    "question": (yes_no_question, "?"),
    "wh_question": (wh_question, "?"),
    "coordination": (coordination, "."),
    "subordinate": (subordinate, "."),
    "fronted_subordinate": (fronted_subordinate, "."),
    "that": (that_clause, "."),
    "that_q": (lambda rng, level: that_clause(rng, level, question=True), "?"),
}


def finish(words: list[str], end: str, english: bool = False) -> str:
    """Join words, attach commas and the final mark, capitalise; in English, a -> an."""
    words = list(words)
    if english:
        for i, word in enumerate(words[:-1]):
            if word == "a" and words[i + 1][0] in "aeiou":
                words[i] = "an"
    text = " ".join(words).replace(" ,", ",") + end
    return text[0].upper() + text[1:]


def sample_pair(rng: random.Random) -> tuple[str, str]:
    """One German sentence and its English translation, within the length limits."""
    level = rng.choices(LEVELS, weights=[level.weight for level in LEVELS])[0]
    while True:
        make, end = PATTERNS[pick(rng, level.patterns)]
        de, en = make(rng, level)
        german = finish(de, end)
        if MIN_WORDS <= len(german.split()) <= MAX_WORDS:
            return german, finish(en, end, english=True)


def generate(seed: int, n_train: int, n_dev: int, n_test: int) -> dict[str, list[tuple[str, str]]]:
    """The corpus as {"train"|"dev"|"test": [(German, English), ...]}; no German sentence occurs
    twice, so dev and test share none with train. The same arguments give the same corpus."""
    if min(n_train, n_dev, n_test) < 0:
        raise ValueError("split sizes must not be negative")
    rng = random.Random(seed)
    total = n_train + n_dev + n_test
    translations: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for _ in range(50 * total):
        if len(pairs) == total:
            break
        german, english = sample_pair(rng)
        if german not in translations:
            translations[german] = english
            pairs.append((german, english))
        elif translations[german] != english:  # a grammar bug: one sentence, two translations
            raise RuntimeError(f"{german!r} -> {translations[german]!r} and {english!r}")
    if len(pairs) < total:
        raise ValueError(f"only {len(pairs)} distinct sentences found; asked for {total}")
    rng.shuffle(pairs)  # duplicates are rejected more often late on: mix before splitting
    return {
        "train": pairs[:n_train],
        "dev": pairs[n_train : n_train + n_dev],
        "test": pairs[n_train + n_dev :],
    }


def write_corpus(corpus: dict[str, list[tuple[str, str]]], out_dir: Path) -> list[Path]:
    """Write SPLIT.de and SPLIT.en (UTF-8, one sentence per line, "\\n" endings)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, pairs in corpus.items():
        for index, lang in enumerate(("de", "en")):
            path = out_dir / f"{split}.{lang}"
            text = "".join(pair[index] + "\n" for pair in pairs)
            path.write_text(text, encoding="utf-8", newline="\n")
            written.append(path)
    return written


def describe(corpus: dict[str, list[tuple[str, str]]], samples: int = 3) -> str:
    """Sizes, word counts and a few sample pairs per split."""
    lines = []
    for split, pairs in corpus.items():
        for index, lang in enumerate(("de", "en")):
            counts = [len(pair[index].split()) for pair in pairs]
            mean = sum(counts) / max(len(counts), 1)
            lines.append(
                f"{split}.{lang}: {len(pairs)} lines, {mean:.1f} words on average, "
                f"{min(counts, default=0)}-{max(counts, default=0)} words"
            )
        for german, english in pairs[:samples]:
            lines.append(f"    {german}\n    -> {english}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--out", type=Path, default=here / "toy", help="output folder (data/toy)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--train", type=int, default=6000, help="training pairs (6000)")
    parser.add_argument("--dev", type=int, default=300, help="development pairs (300)")
    parser.add_argument("--test", type=int, default=300, help="test pairs (300)")
    args = parser.parse_args(argv)
    if min(args.train, args.dev, args.test) < 0:
        parser.error("split sizes must not be negative")
    corpus = generate(args.seed, args.train, args.dev, args.test)
    for path in write_corpus(corpus, args.out):
        print(f"wrote {path}")
    print(describe(corpus))


if __name__ == "__main__":
    main()
