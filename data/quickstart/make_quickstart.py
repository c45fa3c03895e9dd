"""Writes train.csv and dev.csv: short labelled sentiment sentences written for tasklight.

Every fragment below was written for this project (none is copied from an existing data set).
Sentences pair a subject with a positive or negative remark; the dev split uses subjects and
remarks that never occur in train, so dev accuracy measures transfer, not memorisation.
Run `python data/quickstart/make_quickstart.py` to regenerate (deterministic).
"""

import csv
import random
from pathlib import Path

# fmt: off
SUBJECTS = [
    "the film", "this phone", "the hotel room", "our waiter", "the soup", "the new album",
    "this laptop", "the museum tour", "the train ride", "the concert", "the novel", "this app",
    "the pasta", "the coffee", "the landlord", "the repair shop", "the lecture", "the game",
    "the headphones", "the garden", "the bakery", "the hiking trail", "the customer service",
    "the sequel", "the playground", "the dentist", "the bike", "the podcast", "the museum cafe",
    "the moving company", "the tent", "the comedy show", "the keyboard", "the ferry",
    "the yoga class", "the cookbook", "the printer", "the festival", "the umbrella", "the pizza",
]
POSITIVE = [
    "was a real delight", "exceeded every expectation we had", "made my whole week",
    "is worth every penny", "felt warm and welcoming", "was clever and funny",
    "works beautifully", "left us smiling for hours", "was absolutely wonderful",
    "is the best I have tried", "was fresh and tasty", "turned out great",
    "deserves all the praise", "was a joy from start to finish", "impressed everyone",
    "is simply excellent", "was friendly and quick", "feels sturdy and well made",
    "was charming", "kept me happily engaged", "was a pleasant surprise", "is brilliant",
    "was lovely in every way", "did exactly what it promised", "was superb",
    "is a gem", "made the trip memorable", "was thoughtful and kind", "shines", "was perfect",
    "is fantastic value", "was a treat", "gets a big thumbs up from me", "was inspiring",
    "runs smoothly and quietly", "was cozy and clean", "is easy to love", "was top notch",
]
NEGATIVE = [
    "was a total letdown", "broke after two days", "ruined our evening", "is a waste of money",
    "felt cold and unfriendly", "was dull and far too long", "barely works",
    "left us annoyed for hours", "was absolutely dreadful", "is the worst I have tried",
    "was stale and bland", "turned out badly", "deserves every complaint", "was a chore",
    "disappointed everyone", "is simply awful", "was rude and slow", "feels cheap and flimsy",
    "was tedious", "bored me to tears", "was an unpleasant shock", "is a mess",
    "was grim in every way", "never did what it promised", "was terrible", "is a disaster",
    "made the trip miserable", "was careless and rude", "falls apart", "was a nightmare",
    "is overpriced junk", "was painful to sit through", "gets a thumbs down from me",
    "was depressing", "rattles and overheats", "was dirty and cramped", "is hard to like",
    "was awful",
]
# fmt: on
PREFIXES = ["", "", "", "honestly, ", "sadly, ", "overall, ", "i think ", "to be fair, "]


def sentences(subjects: list[str], remarks: list[str], label: str, n: int, rng: random.Random):
    out = set()
    while len(out) < n:
        prefix = rng.choice(PREFIXES)
        if label == "positive" and prefix == "sadly, ":
            continue
        out.add((f"{prefix}{rng.choice(subjects)} {rng.choice(remarks)}.", label))
    return sorted(out)


def main() -> None:
    rng = random.Random(20261128)
    subj = SUBJECTS[:]
    pos, neg = POSITIVE[:], NEGATIVE[:]
    rng.shuffle(subj), rng.shuffle(pos), rng.shuffle(neg)
    dev_subj, train_subj = subj[:10], subj[10:]
    dev_pos, train_pos = pos[:10], pos[10:]
    dev_neg, train_neg = neg[:10], neg[10:]
    train = sentences(train_subj, train_pos, "positive", 160, rng)
    train += sentences(train_subj, train_neg, "negative", 160, rng)
    dev = sentences(dev_subj, dev_pos, "positive", 50, rng)
    dev += sentences(dev_subj, dev_neg, "negative", 50, rng)
    rng.shuffle(train), rng.shuffle(dev)
    here = Path(__file__).parent
    for name, rows in (("train.csv", train), ("dev.csv", dev)):
        with open(here / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows)


if __name__ == "__main__":
    main()
