"""The embedded default corpus: procedurally generated text with structure at several levels.

Nothing is downloaded: the corpus is a pure function of a seed, generated in about a second, so
a class can run the ablation offline. It is built so a 1-5M-parameter model's validation loss
keeps improving for several minutes of CPU training, and so that what separates good models from
bad ones is visible in the loss:

    spelling and grammar    a fixed vocabulary of words in templated sentences (learned first)
    entity consistency      a story names its characters once and then refers back to them by
                            name and pronoun (he/she, his/her): predicting "Mia" later needs
                            attention to the start of the story (induction / copying)
    arithmetic              "37 + 45 = 82", "6 x 7 = 42", and counting inside stories ("Now Tom has
                            9 apples"): the answer digits are a function of earlier digits
    in-context recall       key-value facts stated at the top of a document and asked again, in a
                            different order, at its end ("Q: What is Ava's favorite fruit? A: mango")
    copying and reversing   short lists repeated forwards and backwards

The recall and copying parts are where attention variants differ (the MQAR probe in mqar.py
isolates the same skill); the rest is what every model learns. Generated from a seeded
`random.Random`, so the same seed gives the same bytes on every machine and Python version >= 3.11.
"""

from __future__ import annotations

import random
from typing import Callable

CORPUS_VERSION = 1  # bump when the generator changes: cached corpora are keyed by it
DEFAULT_SEED = 1234
DEFAULT_DOCUMENTS = 8000  # about 2.5 MB of text

GIRLS = ["Mia", "Ava", "Lily", "Emma", "Zoe", "Nora", "Ruby", "Ella", "Lucy", "Sara", "Anna", "Maya", "Ivy", "Rosa",
         "Lena", "Hana", "Chloe", "Grace", "Kira", "Tess"]  # fmt: skip
BOYS = ["Tom", "Leo", "Max", "Sam", "Ben", "Omar", "Jack", "Finn", "Noah", "Eli", "Ravi", "Hugo", "Owen", "Kai",
        "Luca", "Theo", "Adam", "Ivan", "Milo", "Jon"]  # fmt: skip
PETS = ["dog", "cat", "rabbit", "bird", "turtle", "duck", "horse", "goat", "mouse", "frog"]
PET_NAMES = ["Rex", "Bella", "Coco", "Pip", "Biscuit", "Luna", "Spot", "Ziggy", "Pepper", "Mochi", "Bolt", "Daisy",
             "Nugget", "Olive", "Tiger", "Waffles"]  # fmt: skip
PLACES = ["park", "forest", "beach", "garden", "village", "library", "market", "school", "river", "hill", "farm",
          "lake", "zoo", "castle", "bakery", "harbor"]  # fmt: skip
OBJECTS = ["ball", "kite", "book", "hat", "box", "key", "cup", "boat", "drum", "lamp", "shell", "map", "coin", "bell",
           "scarf", "robot"]  # fmt: skip
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black", "pink", "brown", "gold", "silver"]
FEELINGS = ["happy", "sad", "scared", "proud", "tired", "excited", "angry", "surprised"]
HIDING = ["under the bench", "behind a tree", "inside an old boot", "next to the gate", "on top of the wall",
          "in the tall grass", "under a big leaf", "beside the well"]  # fmt: skip
FOODS = ["apple", "cookie", "pear", "carrot", "plum", "cake", "egg", "nut"]  # "1 apple", "2 apples"
FRUITS = ["mango", "banana", "cherry", "lemon", "peach", "grape", "melon", "kiwi", "orange", "plum", "apple", "fig"]
CITIES = ["Paris", "Cairo", "Lima", "Oslo", "Tokyo", "Delhi", "Quito", "Rome", "Seoul", "Nairobi", "Dublin", "Hanoi"]
ANIMALS = ["lion", "owl", "whale", "fox", "panda", "eagle", "shark", "bear", "wolf", "otter", "camel", "koala"]
JOBS = ["baker", "doctor", "farmer", "teacher", "pilot", "painter", "driver", "singer", "tailor", "guard"]
WORDS = ["sun", "moon", "star", "tree", "rock", "cloud", "rain", "snow", "wind", "fire", "leaf", "seed", "road",
         "door", "bread", "milk", "sock", "shoe", "nest", "egg", "pen", "cap", "bag", "fish"]  # fmt: skip


class _Person:
    def __init__(self, name: str, girl: bool):
        self.name, self.girl = name, girl
        self.kind = "girl" if girl else "boy"
        self.he, self.him, self.his = ("she", "her", "her") if girl else ("he", "him", "his")
        self.He, self.His = self.he.capitalize(), self.his.capitalize()


def _person(rng: random.Random, avoid: tuple[str, ...] = ()) -> _Person:
    while True:
        girl = rng.random() < 0.5
        name = rng.choice(GIRLS if girl else BOYS)
        if name not in avoid:
            return _Person(name, girl)


def lost_and_found(rng: random.Random) -> str:
    """A story whose later sentences depend on names, pronouns and objects introduced early."""
    a = _person(rng)
    b = _person(rng, (a.name,))
    pet, pet_name = rng.choice(PETS), rng.choice(PET_NAMES)
    home, place = rng.sample(PLACES, 2)
    color, obj = rng.choice(COLORS), rng.choice(OBJECTS)
    lost = rng.choice([o for o in OBJECTS if o != obj])
    lost_color, hiding = rng.choice(COLORS), rng.choice(HIDING)
    s = [
        f"Once upon a time, there was a little {a.kind} named {a.name}. {a.He} lived near the {home} with "
        f"{a.his} {pet}, {pet_name}. {a.name} loved to play with {a.his} {color} {obj}.",
        f"One day, {a.name} and {pet_name} went to the {place}. There they met {b.name}, a {b.kind} who had lost "
        f"{b.his} {lost_color} {lost}. \"Why are you sad, {b.name}?\" asked {a.name}. \"I lost my {lost_color} "
        f"{lost},\" said {b.name}.",
    ]
    if rng.random() < 0.5:
        s.append(f"{a.name} wanted to help {b.him}. {a.He} looked {rng.choice(HIDING)}, but the {lost} was not there.")
    s.append(
        f"Then {pet_name} the {pet} ran off and came back with something. It was the {lost_color} {lost}! "
        f"{pet_name} had found it {hiding}."
    )
    s.append(
        f"\"Thank you, {a.name}! Thank you, {pet_name}!\" said {b.name}. {b.He} was very {rng.choice(['happy', 'glad'])}. "
        f"From that day on, {a.name}, {b.name} and {pet_name} were best friends."
    )
    return "\n".join(s)


def counting_story(rng: random.Random) -> str:
    """A story that keeps a running count: each total follows from the numbers before it."""
    a = _person(rng)
    b = _person(rng, (a.name,))
    food = rng.choice(FOODS)
    have = rng.randint(2, 9)
    n_food = lambda n: f"{n} {food}" if n == 1 else f"{n} {food}s"  # noqa: E731
    s = [f"{a.name} went to the {rng.choice(PLACES)} with a basket. In the basket there were {n_food(have)}."]
    for _ in range(rng.randint(2, 4)):
        if rng.random() < 0.5 or have < 2:
            n = rng.randint(1, 6)
            giver = rng.choice([b.name, "a kind old man", "a friendly farmer", f"{a.his} mother"])
            s.append(f"Then {giver} gave {a.him} {n} more. Now {a.name} has {n_food(have + n)}.")
            have += n
        else:
            n = rng.randint(1, have - 1)
            s.append(f"{a.He} gave {n_food(n)} to {b.name}. Now {a.name} has {n_food(have - n)}.")
            have -= n
    s.append(f"At the end of the day, {a.name} had {n_food(have)} and felt {rng.choice(FEELINGS)}.")
    return "\n".join(s)


def feelings_story(rng: random.Random) -> str:
    """Short cause-and-effect story: a feeling, its reason, and a resolution, with consistent entities."""
    a = _person(rng)
    pet, pet_name = rng.choice(PETS), rng.choice(PET_NAMES)
    feeling = rng.choice(["sad", "scared", "tired", "angry"])
    color, obj = rng.choice(COLORS), rng.choice(OBJECTS)
    reason = {
        "sad": f"{a.his} {color} {obj} was broken",
        "scared": "the night was dark and loud",
        "tired": f"{a.he} had walked all the way to the {rng.choice(PLACES)}",
        "angry": f"{pet_name} had chewed {a.his} {color} {obj}",
    }[feeling]
    fix = {
        "sad": f"{a.His} friend helped {a.him} fix the {obj}",
        "scared": f"{pet_name} the {pet} sat next to {a.him} all night",
        "tired": f"{a.he} took a long nap with {pet_name}",
        "angry": f"{pet_name} brought {a.him} a new {obj} to say sorry",
    }[feeling]
    return (
        f"{a.name} had a {pet} called {pet_name}. One morning {a.name} felt {feeling} because {reason}.\n"
        f"Then {fix}. After that, {a.name} was not {feeling} any more. {a.He} smiled and hugged {pet_name}."
    )


def facts(rng: random.Random) -> str:
    """Key-value facts stated once, then asked in a different order: answering needs in-context recall."""
    people = rng.sample(GIRLS + BOYS, rng.randint(4, 7))
    kinds = [
        ("favorite fruit", FRUITS), ("favorite city", CITIES), ("favorite animal", ANIMALS), ("job", JOBS),
        ("locker number", None), ("lucky color", COLORS),
    ]  # fmt: skip
    stated = []
    for name in people:
        key, values = rng.choice(kinds)
        value = str(rng.randint(10, 99)) if values is None else rng.choice(values)
        stated.append((name, key, value))
    s = ["Here are some facts."]
    s += [f"{name}'s {key} is {value}." for name, key, value in stated]
    asked = rng.sample(stated, k=max(2, len(stated) - rng.randint(0, 2)))
    s.append("Now answer the questions.")
    s += [f"Q: What is {name}'s {key}? A: {value}." for name, key, value in asked]
    return "\n".join(s)


def codes(rng: random.Random) -> str:
    """Four-digit codes bound to coloured doors: exact digit strings must be copied from far back."""
    doors = rng.sample(COLORS, rng.randint(3, 6))
    stated = [(door, f"{rng.randint(1000, 9999)}") for door in doors]
    s = ["The guard wrote down the door codes."]
    s += [f"The {door} door opens with code {code}." for door, code in stated]
    s.append(f"Later, {rng.choice(GIRLS + BOYS)} asked the guard for help.")
    for door, code in rng.sample(stated, len(stated)):
        s.append(f"Which code opens the {door} door? It is {code}.")
    return "\n".join(s)


def arithmetic(rng: random.Random) -> str:
    """A worksheet of additions, subtractions and times tables: digits determined by earlier digits."""
    s = [rng.choice(["Math practice.", "Let us do some sums.", "Homework:"])]
    for _ in range(rng.randint(6, 14)):
        op = rng.random()
        if op < 0.4:
            x, y = rng.randint(0, 99), rng.randint(0, 99)
            s.append(f"{x} + {y} = {x + y}")
        elif op < 0.7:
            x = rng.randint(0, 99)
            y = rng.randint(0, x)
            s.append(f"{x} - {y} = {x - y}")
        else:
            x, y = rng.randint(1, 12), rng.randint(1, 12)
            s.append(f"{x} x {y} = {x * y}")
    return "\n".join(s)


def lists(rng: random.Random) -> str:
    """Copy a short list of words, then reverse it: the output is the input, read back by attention."""
    items = rng.sample(WORDS, rng.randint(3, 7))
    forward, backward = ", ".join(items), ", ".join(reversed(items))
    counting_from = rng.randint(1, 80)
    count = ", ".join(str(counting_from + i) for i in range(rng.randint(4, 8)))
    return f"List: {forward}.\nSay it again: {forward}.\nSay it backwards: {backward}.\nCount: {count}."


GENERATORS: list[tuple[Callable[[random.Random], str], float]] = [
    (lost_and_found, 0.22), (counting_story, 0.14), (feelings_story, 0.12),
    (facts, 0.18), (codes, 0.10), (arithmetic, 0.16), (lists, 0.08),
]  # fmt: skip


def generate_documents(n_documents: int = DEFAULT_DOCUMENTS, seed: int = DEFAULT_SEED) -> list[str]:
    """`n_documents` documents, a pure function of (n_documents, seed)."""
    rng = random.Random(seed)
    kinds, weights = zip(*GENERATORS)
    return [rng.choices(kinds, weights)[0](rng) for _ in range(n_documents)]
