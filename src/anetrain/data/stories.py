"""A seeded generator of simple children's stories, so training works offline with no downloads.

Stories come from a small grammar: a cast (children and pets with pronouns), word lists (places,
toys, food, feelings) and a handful of plots (a lost toy, a new friend, sharing, a fear overcome,
helping, baking, a rainy day, a broken toy), each with several phrasings per sentence. The output
reads like TinyStories ("Once upon a time, there was a little girl named Lily. ...") but is small
enough for a tiny model to learn its patterns in minutes.

Randomness comes from the raw PCG64 stream (``BitGenerator.random_raw``), which NumPy keeps stable
across versions, so a seed gives the same corpus everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")

DEFAULT_SEED = 1234


class _Rand:
    """Uniform draws from a PCG64 raw stream, buffered because per-call NumPy draws are slow."""

    def __init__(self, seed: int) -> None:
        self._bits = np.random.PCG64(seed)
        self._buf: list[float] = []
        self._pos = 0

    def random(self) -> float:
        if self._pos == len(self._buf):
            raw = self._bits.random_raw(8192) >> np.uint64(11)
            self._buf = (raw.astype(np.float64) * (1.0 / 9007199254740992.0)).tolist()
            self._pos = 0
        self._pos += 1
        return self._buf[self._pos - 1]

    def choice(self, items: Sequence[T]) -> T:
        return items[int(self.random() * len(items))]

    def chance(self, p: float) -> bool:
        return self.random() < p

    def pick_other(self, items: Sequence[T], avoid: T) -> T:
        while True:
            item = self.choice(items)
            if item != avoid:
                return item


@dataclass(frozen=True)
class Character:
    name: str
    kind: str  # "girl", "boy", "dog", ...
    he: str
    him: str
    his: str

    @property
    def He(self) -> str:
        return self.he.capitalize()

    @property
    def His(self) -> str:
        return self.his.capitalize()


_GIRLS = [
    "Lily", "Sue", "Mia", "Anna", "Lucy", "Emma", "Sara", "Zoe", "Amy", "Kate", "Ella", "Rose",
    "Jane", "Molly", "Daisy", "Kim", "Lola",
]  # fmt: skip
_BOYS = [
    "Tom", "Ben", "Max", "Tim", "Sam", "Jack", "Leo", "Joe", "Bob", "Timmy", "Billy", "Jake",
    "Finn", "Dan", "Noah", "Ted", "Spike",
]  # fmt: skip
_PETS = {
    "dog": ["Spot", "Rex", "Buddy", "Max", "Rover"],
    "cat": ["Kitty", "Whiskers", "Mittens", "Tiger"],
    "bird": ["Pip", "Tweety", "Sunny"],
    "bunny": ["Hoppy", "Fluffy", "Snowy"],
    "bear": ["Teddy", "Brownie"],
    "frog": ["Freddy", "Jumpy"],
}
_TRAITS = [
    "little", "happy", "kind", "curious", "shy", "brave", "silly", "friendly", "small", "playful",
]  # fmt: skip
_PLACES = [
    "park", "garden", "forest", "beach", "farm", "lake", "zoo", "hill", "river", "playground",
    "backyard", "meadow", "market", "woods", "pond",
]  # fmt: skip
_TOYS = [
    "ball", "kite", "teddy bear", "toy car", "doll", "book", "hat", "box", "boat", "balloon",
    "shell", "drum", "train", "blanket", "crayon", "puzzle",
]  # fmt: skip
_TOY_ADJ = [
    "red", "blue", "green", "yellow", "pink", "purple", "big", "shiny", "soft", "new", "little",
    "orange",
]  # fmt: skip
_FOOD = ["cake", "cookies", "a pie", "soup", "bread", "muffins", "pancakes", "a big salad"]
_RELATIVES = ["mom", "dad", "grandma", "grandpa", "sister", "brother"]
_WHEN = [
    "One day",
    "One sunny day",
    "One morning",
    "One afternoon",
    "One rainy day",
    "The next day",
    "One warm evening",
]
_LIKES = [
    "play with {his} {toy}",
    "run in the grass",
    "draw pictures",
    "sing songs",
    "jump in puddles",
    "read books",
    "build castles in the sand",
    "dance",
    "climb trees",
    "look at the stars",
    "help {his} {rel}",
    "pick flowers",
    "play outside",
    "chase butterflies",
]
_HIDING = [
    "under the bed",
    "behind a big tree",
    "in the toy box",
    "under a pile of leaves",
    "next to the door",
    "in the tall grass",
    "under the table",
]
_LOOKED = ["under the bed", "in the kitchen", "in the garden", "behind the door", "everywhere"]
_FEARS = [
    ("the dark", "One night, the light went off"),
    ("big dogs", "One day, a big dog barked at {him}"),
    ("the water", "One hot day, {his} family went to the lake to swim"),
    ("thunder", "One night, there was a big storm"),
    ("the tall slide", "One day at the park, it was time to go down the tall slide"),
]
_GOOD = ["happy", "glad", "proud", "excited"]
_BAD = ["sad", "upset", "worried", "unhappy"]
_ENDINGS = [
    "From that day on, {a} and {b} were best friends.",
    "{a} smiled. It was the best day ever.",
    "{a} and {b} played together until the sun went down.",
    "That night, {a} went to sleep with a big smile.",
    "{a} was very happy, and so was {b}.",
]


def _child(rng: _Rand) -> Character:
    if rng.chance(0.5):
        return Character(rng.choice(_GIRLS), "girl", "she", "her", "her")
    return Character(rng.choice(_BOYS), "boy", "he", "him", "his")


def _pet(rng: _Rand) -> Character:
    kind = rng.choice(list(_PETS))
    name = rng.choice(_PETS[kind])
    if rng.chance(0.5):
        return Character(name, kind, "she", "her", "her")
    return Character(name, kind, "he", "him", "his")


def _friend(rng: _Rand, hero: Character) -> Character:
    while True:
        other = _child(rng) if rng.chance(0.7) else _pet(rng)
        if other.name != hero.name:
            return other


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _intro(rng: _Rand, hero: Character) -> list[str]:
    trait = rng.choice(_TRAITS)
    opening = rng.choice(
        [
            f"Once upon a time, there was {_a(trait)} {hero.kind} named {hero.name}.",
            f"There once was {_a(trait)} {hero.kind} called {hero.name}.",
            f"Once upon a time, in a small town, there lived {_a(trait)} {hero.kind}. "
            f"{hero.His} name was {hero.name}.",
            f"{hero.name} was {_a(trait)} {hero.kind}.",
        ]
    )
    like = rng.choice(_LIKES).format(
        his=hero.his, toy=rng.choice(_TOYS), rel=rng.choice(_RELATIVES)
    )
    return [opening, f"{hero.He} liked to {like}."]


def _plot_lost(rng: _Rand, hero: Character, friend: Character) -> list[str]:
    toy = rng.choice(_TOYS)
    adj = rng.choice(_TOY_ADJ)
    hide = rng.choice(_HIDING)
    return [
        f"{hero.name} had {_a(adj)} {toy}. {hero.He} loved it very much.",
        f"{rng.choice(_WHEN)}, {hero.name} could not find the {toy}.",
        f"{hero.He} looked {rng.choice(_LOOKED)}, but it was not there.",
        f"{hero.name} felt {rng.choice(_BAD)} and started to cry.",
        f'Then {friend.name} came and said, "Don\'t cry, {hero.name}. I will help you."',
        f"They looked together, and {friend.name} found the {toy} {hide}.",
        f'{hero.name} was so {rng.choice(_GOOD)}. "Thank you, {friend.name}!" {hero.he} said.',
    ]


def _plot_friend(rng: _Rand, hero: Character, friend: Character) -> list[str]:
    place = rng.choice(_PLACES)
    game = rng.choice(["tag", "hide and seek", "ball", "catch", "house"])
    mood = rng.choice(_BAD)
    return [
        f"{rng.choice(_WHEN)}, {hero.name} went to the {place}.",
        f"At the {place}, {hero.he} saw {_a(friend.kind)} sitting all alone. "
        f"{friend.He} looked {mood}.",
        f'{hero.name} walked over and asked, "Why are you {mood}?"',
        f'"I have no friends to play with," said the {friend.kind}.',
        f'"You can play with me!" said {hero.name}. "My name is {hero.name}."',
        f'The {friend.kind} smiled and said, "My name is {friend.name}."',
        f"They played {game} all day, and they laughed a lot.",
    ]


def _plot_share(rng: _Rand, hero: Character, friend: Character) -> list[str]:
    toy = rng.choice(_TOYS)
    adj = rng.choice(_TOY_ADJ)
    rel = rng.choice(["mom", "dad", "grandma", "teacher"])
    return [
        f"{hero.name} got {_a(adj)} {toy} from {hero.his} {rel}. {hero.He} was very "
        f"{rng.choice(_GOOD)}.",
        f'{friend.name} saw the {toy} and asked, "Can I play with it too?"',
        f'"No, it is mine!" said {hero.name}. {friend.name} felt {rng.choice(_BAD)} and '
        "walked away.",
        f'Then {hero.name} remembered what {hero.his} {rel} said: "It is good to share."',
        f'{hero.name} ran to {friend.name} and said, "I am sorry. Let\'s play together."',
        f"{friend.name} smiled. They took turns with the {toy}, and it was more fun for both.",
        f"{hero.name} learned that sharing makes everyone {rng.choice(_GOOD)}.",
    ]


def _plot_fear(rng: _Rand, hero: Character, friend: Character) -> list[str]:
    fear, moment = rng.choice(_FEARS)
    rel = rng.choice(_RELATIVES[:4])
    return [
        f"But {hero.name} was scared of {fear}.",
        f"{moment.format(him=hero.him, his=hero.his)}, and {hero.name} felt very scared.",
        f'{hero.He} ran to {hero.his} {rel} and said, "I am scared!"',
        f'{hero.His} {rel} gave {hero.him} a big hug. "Don\'t be scared. I am here with you."',
        f"{hero.name} took a deep breath and tried to be brave.",
        f"Soon {hero.he} was not scared anymore. It was not so bad after all!",
        f"{hero.name} felt very proud of {hero.him}self.",
    ]


def _plot_help(rng: _Rand, hero: Character, friend: Character) -> list[str]:
    place = rng.choice(_PLACES)
    trouble, fix = rng.choice(
        [
            ("stuck in a tree", "climbed up and helped it down"),
            ("lost and could not find home", "showed it the way home"),
            ("hurt its leg", "gave it some water and a soft bed"),
            ("very hungry", "gave it some bread"),
        ]
    )
    animal = rng.choice(["bird", "kitten", "puppy", "duck", "squirrel"])
    return [
        f"{rng.choice(_WHEN)}, {hero.name} and {friend.name} went to the {place}.",
        f"They saw a little {animal}. The {animal} was {trouble}.",
        f'"We have to help it," said {hero.name}.',
        f"{hero.name} {fix}. {friend.name} helped too.",
        f"The {animal} was happy. It looked at them as if to say thank you.",
        f"{hero.name} and {friend.name} felt {rng.choice(_GOOD)} because they helped.",
    ]


def _plot_bake(rng: _Rand, hero: Character, friend: Character) -> list[str]:
    food = rng.choice(_FOOD)
    rel = rng.choice(["mom", "dad", "grandma", "grandpa"])
    oops = rng.choice(["spilled the flour", "dropped an egg", "made a big mess"])
    bare = food.removeprefix("a big ").removeprefix("a ")
    return [
        f"{rng.choice(_WHEN)}, {hero.name} wanted to make {food} with {hero.his} {rel}.",
        f"They got a big bowl and a spoon. {hero.name} helped to mix.",
        f"Oops! {hero.name} {oops}. {hero.He} was worried, but {hero.his} {rel} laughed.",
        f'"It is okay," said {hero.his} {rel}. "We can clean it up together."',
        f"Soon the {bare} was ready. It smelled so good.",
        f'{hero.name} shared the {bare} with {friend.name}. "Yum!" said {friend.name}.',
    ]


def _plot_rain(rng: _Rand, hero: Character, friend: Character) -> list[str]:
    place = rng.choice(_PLACES)
    inside = rng.choice(["built a fort with blankets", "drew funny pictures", "played a game"])
    return [
        f"{hero.name} wanted to go to the {place} with {friend.name}.",
        f"But when {hero.he} looked out of the window, it was raining.",
        f'"Oh no!" said {hero.name}. {hero.He} felt {rng.choice(_BAD)}.',
        f"So {hero.name} and {friend.name} {inside} inside.",
        "After a while, the rain stopped, and they saw a big rainbow in the sky.",
        f"They ran to the {place} and played in the sun. It was a good day.",
    ]


def _plot_broken(rng: _Rand, hero: Character, friend: Character) -> list[str]:
    toy = rng.choice(_TOYS)
    rel = rng.choice(["mom", "dad", "grandpa"])
    return [
        f"{hero.name} had a favorite {toy}. {hero.He} played with it every day.",
        f"{rng.choice(_WHEN)}, {hero.he} dropped the {toy}, and it broke.",
        f"{hero.name} was very {rng.choice(_BAD)}. {hero.He} showed it to {hero.his} {rel}.",
        f'"Let me see," said {hero.his} {rel}. {hero.His} {rel} used some glue to fix it.',
        f"Soon the {toy} was as good as new. {hero.name} gave {hero.his} {rel} a big hug.",
        f"{hero.name} learned to be careful with {hero.his} toys.",
    ]


_PLOTS: list[Callable[[_Rand, Character, Character], list[str]]] = [
    _plot_lost,
    _plot_friend,
    _plot_share,
    _plot_fear,
    _plot_help,
    _plot_bake,
    _plot_rain,
    _plot_broken,
]


def story(rng: _Rand) -> str:
    """One story: intro, one plot, an ending; a single paragraph with no newlines."""
    hero = _child(rng) if rng.chance(0.8) else _pet(rng)
    friend = _friend(rng, hero)
    lines = _intro(rng, hero) + rng.choice(_PLOTS)(rng, hero, friend)
    if rng.chance(0.7):
        lines.append(rng.choice(_ENDINGS).format(a=hero.name, b=friend.name))
    return " ".join(lines)


def iter_stories(n: int, seed: int = DEFAULT_SEED) -> Iterator[str]:
    """``n`` stories, identical for the same seed on every platform and NumPy version."""
    rng = _Rand(seed)
    for _ in range(n):
        yield story(rng)


def generate_stories(n: int, seed: int = DEFAULT_SEED) -> list[str]:
    return list(iter_stories(n, seed))
