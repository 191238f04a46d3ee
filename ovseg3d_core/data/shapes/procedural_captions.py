"""Text2Shape-style captions for procedural shapes, from a small grammar over the shape's own facts.

Real Text2Shape captions are short, lower-case, often several " ."-separated sentences, mention a
random subset of colour / material / part facts with varied wording, and carry details that say
nothing about the geometry ("looks comfortable"). The grammar mimics that: each caption draws a
head noun (chair, armchair, office chair, stool, coffee table, ...), a random subset of the shape's
facts, each realised by a random synonym or paraphrase as a prenominal modifier, a ``with``
phrase or its own sentence, one of several sentence templates and, sometimes, a distractor.
Every colour and part a caption names is read from the :class:`ProceduralShape`, so captions are
never wrong, only incomplete, as in the real data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ovseg3d_core.data.shapes.procedural_shapes import Finish, ProceduralShape

COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "white": ("white",),
    "black": ("black",),
    "gray": ("gray", "grey"),
    "silver": ("silver", "chrome"),
    "red": ("red",),
    "blue": ("blue",),
    "green": ("green",),
    "yellow": ("yellow",),
    "orange": ("orange",),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
    "beige": ("beige", "cream"),
    "light brown": ("light brown", "tan"),
    "brown": ("brown",),
    "dark brown": ("dark brown", "chocolate brown"),
    "gold": ("gold", "golden"),
    "clear": ("clear", "transparent"),
}
"""Words a caption may use for each palette colour (tests use it to check colour consistency)."""

MATERIAL_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "wood": ("wooden", "wood"),
    "metal": ("metal", "metallic", "steel"),
    "fabric": ("fabric", "cloth", "upholstered"),
    "leather": ("leather",),
    "plastic": ("plastic",),
    "glass": ("glass",),
    "marble": ("marble",),
}

DISTRACTORS = {
    "chair": (
        "it looks comfortable",
        "perfect for a dining room",
        "good for an office",
        "simple and modern design",
        "it has an old look",
        "it seems sturdy",
        "nice for a living room",
        "classic style",
        "useful for many purposes",
        "it is easy to move around",
    ),
    "table": (
        "it is useful for placing things",
        "perfect for a living room",
        "good for the kitchen",
        "modern design",
        "classic style",
        "it looks sturdy",
        "there is enough space to place anything on it",
        "simple and elegant",
        "it would fit in a small apartment",
    ),
}


MATERIAL_NOUNS: dict[str, tuple[str, ...]] = {
    "wood": ("wood",),
    "metal": ("metal", "steel"),
    "fabric": ("fabric", "cloth"),
    "leather": ("leather",),
    "plastic": ("plastic",),
    "glass": ("glass",),
    "marble": ("marble",),
}

_SLOT_ORDER = ("count", "size", "shape", "finish")
_PLURAL_PARTS = {"legs", "arms"}


@dataclass
class _PartPhrase:
    """Words gathered for one part ("four" + "thin" + black metal + "legs") before realisation."""

    noun: str
    slots: dict[str, str] = field(default_factory=dict)
    finish: Finish | None = None


@dataclass
class _Phrases:
    """The chosen facts: head-noun modifiers, part phrases, free ``with`` phrases and sentences."""

    modifiers: list[str] = field(default_factory=list)
    parts: dict[str, _PartPhrase] = field(default_factory=dict)
    withs: list[str] = field(default_factory=list)
    support: str | None = None
    sentences: list[str] = field(default_factory=list)


class _Grammar:
    """Random realisations of one shape's facts; one instance writes all captions of a shape."""

    def __init__(self, shape: ProceduralShape, rng: np.random.Generator) -> None:
        self.shape, self.rng, self.style = shape, rng, shape.style

    def pick(self, *options: str) -> str:
        return options[self.rng.integers(len(options))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def color(self, finish: Finish) -> str:
        return self.pick(*COLOR_WORDS[finish.color])

    def finish_words(self, finish: Finish) -> str:
        """'red fabric', 'wooden' or 'black': colour and/or material of a part (glass is never coloured)."""
        if finish.material == "glass":
            return "glass"
        choice = self.rng.integers(3)
        material = self.pick(*MATERIAL_ADJECTIVES[finish.material])
        return self.color(finish) if choice == 0 else material if choice == 1 else f"{self.color(finish)} {material}"

    def finish_sentence(self, subject: str, finish: Finish) -> str:
        verb = "are" if subject in _PLURAL_PARTS else "is"
        material = self.pick(*MATERIAL_NOUNS[finish.material])
        if finish.material == "glass" or self.chance(0.4):
            return f"{subject} {verb} made of {material}"
        return self.pick(f"{subject} {verb} {self.color(finish)}", f"{subject} {verb} {self.finish_words(finish)}")

    def differs(self, part: str, reference: str) -> bool:
        finishes = self.shape.finishes
        return part in finishes and finishes[part] != finishes[reference]

    def part(self, out: _Phrases, name: str, noun: str) -> _PartPhrase:
        return out.parts.setdefault(name, _PartPhrase(noun))

    def main_part(self) -> str:
        return "seat" if self.shape.category == "chair" else "top"

    def noun(self) -> str:
        s = self.style
        if self.shape.category == "chair":
            if s["back"] == "none":
                return self.pick("stool", "backless stool", "stool", "stool without a back")
            if s["legs"] == "pedestal" and self.chance(0.6):
                return self.pick("office chair", "swivel chair", "desk chair")
            if s["arms"] == "yes" and self.chance(0.6):
                return self.pick("armchair", "arm chair")
            if s["legs"] == "four" and s["arms"] == "no" and self.chance(0.25):
                return self.pick("dining chair", "side chair")
            return "chair"
        kind = s["height"]
        if kind == "coffee" and self.chance(0.7):
            return self.pick("coffee table", "low table", "tea table", "side table")
        if kind == "bar" and self.chance(0.7):
            return self.pick("bar table", "tall table", "high table", "pub table")
        if kind == "dining" and self.chance(0.4):
            return self.pick("dining table", "kitchen table")
        return "table"

    def main_part_noun(self) -> str:
        return "seat" if self.shape.category == "chair" else self.pick("top", "tabletop", "table top")

    def colour_material_fact(self, out: _Phrases) -> None:
        """Main colour/material: of the whole shape when it has one finish, else of the seat or top."""
        finishes = self.shape.finishes
        main = finishes[self.main_part()]
        uniform = all(f == main for f in finishes.values()) and main.material != "glass"
        form = self.rng.integers(3)
        if uniform and form == 0:
            out.modifiers.append(self.finish_words(main))
        elif uniform and form == 1:
            out.sentences.append(
                self.pick(
                    f"it is {self.color(main)}",
                    f"it is {self.color(main)} in color",
                    f"it is made of {self.pick(*MATERIAL_NOUNS[main.material])}",
                    f"the whole thing is {self.color(main)}",
                    f"it is {self.color(main)} colored",
                )
            )
        else:
            self.part(out, self.main_part(), self.main_part_noun()).finish = main

    def chair_facts(self) -> list:
        s, facts = self.style, [self.chair_legs, self.chair_seat_shape, self.chair_seat_padding]
        if s["back"] != "none":
            facts.append(self.chair_back)
        if s["arms"] == "yes":
            facts.append(self.chair_arms)
        elif s["back"] != "none":
            facts.append(
                lambda out: (
                    out.modifiers.append("armless")
                    if self.chance(0.5)
                    else out.withs.append(self.pick("no arms", "no armrests"))
                )
            )
        if s["stretchers"] == "yes":
            facts.append(
                lambda out: out.withs.append(
                    self.pick("stretchers between the legs", "crossbars connecting the legs", "rails joining the legs")
                )
            )
        return facts

    def chair_seat_shape(self, out: _Phrases) -> None:
        words = {"round": ("round", "circular"), "square": ("square",), "rectangular": ("rectangular", "wide")}
        self.part(out, "seat", "seat").slots["shape"] = self.pick(*words[self.style["seat_shape"]])

    def chair_seat_padding(self, out: _Phrases) -> None:
        padded = self.style["seat_padding"] == "padded"
        if padded and self.chance(0.3):
            out.modifiers.append(self.pick("padded", "cushioned"))
            return
        self.part(out, "seat", "seat").slots["size"] = (
            self.pick("thick cushioned", "padded", "thick") if padded else self.pick("thin", "flat")
        )

    def chair_back(self, out: _Phrases) -> None:
        s = self.style
        if self.chance(0.15):
            out.modifiers.append(f"{'high' if s['back_height'] == 'tall' else 'low'}-back")
            return
        noun = {
            "solid": ("solid back", "solid backrest", "plain back rest", "full back", "back"),
            "slatted": ("slatted back", "back with vertical slats", "slat back"),
            "ladder": ("ladder back", "back with horizontal rails", "back made of horizontal bars"),
        }[s["back"]]
        back = self.part(out, "back", self.pick(*noun))
        if self.chance(0.6):
            back.slots["size"] = self.pick("tall", "high") if s["back_height"] == "tall" else self.pick("low", "short")
        if self.differs("back", "seat") and self.chance(0.6):
            back.finish = self.shape.finishes["back"]

    def chair_arms(self, out: _Phrases) -> None:
        arms = self.part(out, "arms", self.pick("armrests", "arms", "arm rests"))
        if self.chance(0.3):
            arms.slots["count"] = "two"
        if self.differs("arms", "seat") and self.chance(0.5):
            arms.finish = self.shape.finishes["arms"]

    def leg_finish(self) -> Finish | None:
        """The legs' finish, named more often when it differs from the seat/top."""
        legs = self.shape.finishes["legs"]
        return legs if self.chance(0.6 if self.differs("legs", self.main_part()) else 0.15) else None

    def chair_legs(self, out: _Phrases) -> None:
        s = self.style
        finish = self.leg_finish()
        if s["legs"] == "four":
            legs = self.part(out, "legs", "legs")
            legs.slots["count"] = self.pick("four", "4")
            legs.slots["size"] = self.pick("", s["leg_thickness"], s["leg_thickness"], "straight")
            if self.chance(0.3):
                legs.slots["shape"] = s["leg_profile"]
            legs.finish = finish
            return
        words = f"{self.finish_words(finish)} " if finish else ""
        if s["legs"] == "pedestal":
            base = self.pick(
                f"a {words}swivel base",
                f"a {words}five star base",
                f"a single {words}central pole",
                f"a {words}star shaped base",
            )
            if s["wheels"] == "yes":
                base += self.pick(" with wheels", " on casters", " with rollers")
            out.support = base
        else:
            out.support = self.pick(
                f"a {words}sled base",
                f"{words or 'metal '}tube legs",
                f"a {words}tube frame base",
                f"{words}runners instead of legs",
            )

    def table_facts(self) -> list:
        s, facts = self.style, [self.table_top_shape, self.table_legs]
        if s["shelf"] == "yes":
            facts.append(self.table_shelf)
        if s["stretchers"] == "yes":
            facts.append(lambda out: out.withs.append(self.pick("crossbars between the legs", "stretchers")))
        if self.shape.finishes["top"].material != "glass":
            facts.append(self.table_top_thickness)
        return facts

    def table_top_shape(self, out: _Phrases) -> None:
        words = {
            "round": ("round", "circular"),
            "rectangular": ("rectangular", "long", "rectangle shaped"),
            "square": ("square", "square shaped"),
            "oval": ("oval", "elliptical", "oval shaped"),
        }[self.style["top_shape"]]
        if self.chance(0.7):
            out.modifiers.append(self.pick(*words))
        else:
            self.part(out, "top", self.main_part_noun()).slots["shape"] = self.pick(*words)

    def table_top_thickness(self, out: _Phrases) -> None:
        thick = self.style["top_thickness"] == "thick"
        self.part(out, "top", self.main_part_noun()).slots["size"] = (
            self.pick("thick", "chunky") if thick else self.pick("thin", "slim")
        )

    def table_shelf(self, out: _Phrases) -> None:
        shelf = self.part(out, "shelf", self.pick("lower shelf", "shelf underneath", "bottom shelf", "storage shelf"))
        if self.differs("shelf", "top") and self.chance(0.5):
            shelf.finish = self.shape.finishes["shelf"]

    def table_legs(self, out: _Phrases) -> None:
        s = self.style
        finish = self.leg_finish()
        if s["legs"] in ("four", "three"):
            legs = self.part(out, "legs", "legs")
            legs.slots["count"] = self.pick("four", "4") if s["legs"] == "four" else self.pick("three", "3")
            legs.slots["shape"] = self.pick("", s["leg_profile"], "straight")
            legs.finish = finish
            if s["legs"] == "three" and self.chance(0.3):
                out.parts.pop("legs")
                words = f"{self.finish_words(finish)} " if finish else ""
                out.support = f"a {words}tripod base"
            return
        words = f"{self.finish_words(finish)} " if finish else ""
        if s["legs"] == "pedestal":
            phrase = self.pick(
                f"a single {words}pedestal",
                f"one central {words}leg",
                f"a {words}pedestal base",
                f"a single {words}column",
            )
            if self.chance(0.4):
                bases = {
                    "disk": ("a round base", "a circular base plate"),
                    "cross": ("a cross shaped base", "four feet"),
                }
                phrase += f" on {self.pick(*bases[s['pedestal_base']])}"
        else:
            phrase = self.pick(
                f"two {words}panel legs", f"solid {words}side panels as legs", f"{words}slab legs at both ends"
            )
        out.support = phrase

    def realise_part(self, name: str, part: _PartPhrase) -> tuple[str | None, str | None]:
        """A part as a ``with`` phrase, or (only a finish known) sometimes as its own sentence."""
        slots = {k: v for k, v in part.slots.items() if v}
        if part.finish is not None and not slots and self.chance(0.4):
            return None, self.finish_sentence(f"the {name}", part.finish)
        if part.finish is not None:
            slots["finish"] = self.finish_words(part.finish)
        words = " ".join(slots[k] for k in _SLOT_ORDER if k in slots)
        phrase = f"{words} {part.noun}".strip()
        if name in _PLURAL_PARTS or "count" in slots:
            return phrase, None
        return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}", None

    def caption(self) -> str:
        facts = self.chair_facts() if self.shape.category == "chair" else self.table_facts()
        out = _Phrases()
        if self.chance(0.85):
            self.colour_material_fact(out)
        for index in self.rng.permutation(len(facts))[: int(self.rng.integers(1, 4))]:
            facts[index](out)
        withs, sentences = [], []
        for name, part in out.parts.items():
            phrase, sentence = self.realise_part(name, part)
            withs += [phrase] if phrase else []
            sentences += [sentence] if sentence else []
        withs += out.withs
        noun = self.noun()
        modifiers = sorted(out.modifiers, key=_modifier_rank)
        head = " ".join([*modifiers, noun])
        article = "an" if head[0] in "aeiou" else "a"
        template = self.rng.integers(4)
        if out.support and template in (0, 3) and "without" not in noun and self.chance(0.5):
            support = out.support.removesuffix(" instead of legs").replace(" on ", " with ")
            head = f"{head} on {support}"  # "a round table on a single metal pedestal"
        elif out.support:
            withs.append(out.support)
        withs = [withs[i] for i in self.rng.permutation(len(withs))]

        lead: list[str] = []
        if template == 0 and withs:
            lead.append(f"{article} {head} with {_join(withs)}")
        elif template == 1:
            lead.append(self.pick(f"{article} {head}", f"this is {article} {head}", f"it is {article} {head}"))
            lead += [f"it has {w}" for w in withs]
        elif template == 2 and withs and "without" not in noun:
            lead.append(f"the {noun} has {_join(withs)}")
            if modifiers:
                lead.append(f"it is {_join(modifiers)}")
        else:
            lead.append(f"{head} with {_join(withs)}" if withs else head)
        lead += sentences + out.sentences
        if self.chance(0.35):
            lead.append(self.pick(*DISTRACTORS[self.shape.category]))
        separator = " . " if self.chance(0.5) else ". "
        text = re.sub(r"\ba (?=[aeiou])", "an ", separator.join(lead))
        return text + separator.rstrip() if self.chance(0.7) else text


_SHAPE_MODIFIERS = {"round", "circular", "rectangular", "long", "rectangle shaped", "square", "square shaped", "oval"}


def _modifier_rank(word: str) -> int:
    """English adjective order before the noun: opinion/type, then shape, then colour/material."""
    if word in ("armless", "padded", "cushioned") or word.endswith("-back"):
        return 0
    if word in _SHAPE_MODIFIERS or word.startswith(("elliptical", "oval")):
        return 1
    return 2


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def write_captions(shape: ProceduralShape, rng: np.random.Generator, count: int = 5) -> list[str]:
    """``count`` distinct captions for ``shape`` (fewer only if the grammar runs out of variants)."""
    grammar = _Grammar(shape, rng)
    captions: list[str] = []
    for _ in range(count * 20):
        text = grammar.caption()
        if text not in captions:
            captions.append(text)
        if len(captions) == count:
            break
    return captions
