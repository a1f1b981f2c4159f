"""A built-in, procedurally generated English-like corpus for pretraining tiny models.

The vocabulary is deliberately small (a few hundred words) and the grammar simple, so a model with
a hidden size of 64 learns to produce fluent-looking text after a couple of minutes on a CPU. The
word lists are public so other modules (the quickstart instruction task) can ask questions about
the same world the model was pretrained on.

Everything is drawn from one local `random.Random(seed)`: the same arguments always give the same
documents, on every machine and Python version.
"""

import random

NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Ivy", "Jack",
         "Kate", "Leo", "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Victor")
ANIMALS = ("fox", "dog", "cat", "bird", "horse", "rabbit", "mouse", "bear", "wolf", "duck",
           "goat", "sheep", "cow", "frog", "owl", "deer")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "brown", "orange", "purple", "gray")
ADJECTIVES = ("big", "small", "tall", "short", "old", "young", "little", "large")
MOODS = ("happy", "sad", "tired", "hungry", "calm", "busy", "sleepy", "brave")
OBJECTS = ("apple", "ball", "book", "box", "cup", "hat", "key", "lamp", "pen", "rock",
           "shoe", "stick", "bag", "coin", "flower", "bread", "cake", "chair", "boat", "kite")
PLACES = ("market", "park", "school", "river", "forest", "garden", "house", "beach", "hill",
          "farm", "library", "bridge", "village", "lake", "field", "kitchen")
# Intransitive motion verbs, in the third person singular present, so "The fox walks to the park."
VERBS = ("walks", "runs", "goes", "jumps", "swims", "drives", "flies", "hurries", "wanders")
# Transitive verbs with their past tense, for "Anna finds a ball." and "Yesterday Anna found a ball."
ACTIONS = (("finds", "found"), ("sees", "saw"), ("takes", "took"), ("holds", "held"),
           ("buys", "bought"), ("drops", "dropped"), ("likes", "liked"), ("wants", "wanted"),
           ("carries", "carried"), ("paints", "painted"))
TIMES = ("in the morning", "at noon", "in the evening", "at night", "on Monday", "on Friday",
         "every day", "after lunch")
WEATHER = ("sunny", "rainy", "cold", "warm", "windy", "cloudy")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve")


def plural(noun: str) -> str:
    """English plural for the nouns above ("box" -> "boxes", "sheep" -> "sheep")."""
    if noun in ("sheep", "deer"):
        return noun
    if noun == "mouse":
        return "mice"
    if noun == "wolf":
        return "wolves"
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    return noun + "s"


def count_phrase(n: int, noun: str) -> str:
    """ "one apple", "three apples": the number as a word so the vocabulary stays closed."""
    return f"{NUMBER_WORDS[n]} {noun if n == 1 else plural(noun)}"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _subject(rng: random.Random) -> tuple[str, str]:
    """A sentence subject and the pronoun that refers back to it: ("The red fox", "It")."""
    if rng.random() < 0.4:
        return rng.choice(NAMES), rng.choice(("He", "She"))
    adjective = rng.choice(COLORS + ADJECTIVES)
    return f"The {adjective} {rng.choice(ANIMALS)}", "It"


def _story(rng: random.Random) -> str:
    subject, pronoun = _subject(rng)
    place, other_place = rng.sample(PLACES, 2)
    thing = rng.choice(OBJECTS)
    action, _ = rng.choice(ACTIONS)
    n = rng.randint(2, 12)
    sentences = [
        f"{subject} {rng.choice(VERBS)} to the {place} {rng.choice(TIMES)}.",
        f"{pronoun} {action} {count_phrase(n, thing)}.",
        f"The {thing} is {rng.choice(COLORS)}." if n == 1 else
        f"The {plural(thing)} are {rng.choice(COLORS)}.",
        f"{pronoun} is {rng.choice(MOODS)}.",
        f"Then {pronoun.lower()} {rng.choice(VERBS)} to the {other_place}.",
    ]
    return " ".join(sentences[: rng.randint(3, len(sentences))])


def _past(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    _, past = rng.choice(ACTIONS)
    color, thing = rng.choice(COLORS), rng.choice(OBJECTS)
    return (f"Yesterday it was {rng.choice(WEATHER)}. {name} went to the {rng.choice(PLACES)}. "
            f"There {name} {past} {article(color)} {color} {thing}. "
            f"The {thing} was {rng.choice(ADJECTIVES)}.")


def _question(rng: random.Random) -> str:
    """Question/answer pairs whose answer is in the text, so the model sees simple reasoning."""
    kind = rng.randrange(4)
    animal, color, place = rng.choice(ANIMALS), rng.choice(COLORS), rng.choice(PLACES)
    if kind == 0:
        return (f"The {animal} is {color}. Question: What color is the {animal}? "
                f"Answer: The {animal} is {color}.")
    if kind == 1:
        name = rng.choice(NAMES)
        return (f"{name} is at the {place}. Question: Where is {name}? "
                f"Answer: {name} is at the {place}.")
    if kind == 2:
        a, b = rng.randint(1, 6), rng.randint(1, 6)
        name, thing = rng.choice(NAMES), rng.choice(OBJECTS)
        more = thing if b == 1 else plural(thing)
        return (f"{name} has {count_phrase(a, thing)}. {name} gets {NUMBER_WORDS[b]} more {more}. "
                f"Question: How many {plural(thing)} does {name} have? "
                f"Answer: {NUMBER_WORDS[a + b]}.")
    name, thing = rng.choice(NAMES), rng.choice(OBJECTS)
    return (f"{name} has {article(color)} {color} {thing}. Question: What does {name} have? "
            f"Answer: {name} has {article(color)} {color} {thing}.")


def _listing(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    things = rng.sample(OBJECTS, rng.randint(2, 4))
    items = "\n".join(f"- {count_phrase(rng.randint(1, 5), t)}" for t in things)
    return f"{name} goes to the {rng.choice(PLACES)} with a list:\n{items}"


def _counting(rng: random.Random) -> str:
    start = rng.randint(0, 8)
    words = ", ".join(NUMBER_WORDS[start : start + 5])
    return f"The {rng.choice(ANIMALS)} counts: {words}."


# Document kinds and how often each appears; stories dominate like prose dominates real corpora.
_KINDS = ((_story, 5), (_past, 2), (_question, 3), (_listing, 1), (_counting, 1))


def builtin_corpus(n_docs: int = 2000, seed: int = 0) -> list[str]:
    """`n_docs` deterministic documents of a few sentences (or a list) each."""
    rng = random.Random(seed)
    makers = [make for make, _ in _KINDS]
    weights = [weight for _, weight in _KINDS]
    docs = []
    for _ in range(n_docs):
        parts = [make(rng) for make in rng.choices(makers, weights, k=rng.randint(1, 3))]
        docs.append("\n".join(parts) if any("\n" in p for p in parts) else " ".join(parts))
    return docs
