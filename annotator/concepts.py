"""Noun-phrase cleaning: the one place that decides what a *concept* string looks like.

Every parser (offline or LLM) and every import path feeds raw phrases through
:func:`clean_concepts`, so two spellings of the same thing ("The red cars", "a red car") meet as one
concept (``"red car"``). Pure: no model, database or network imports.

Conventions (also documented in ``docs/concepts.md``):

* lower-case; punctuation other than in-word hyphens/apostrophes becomes a space;
* leading articles, determiners, quantities and pronoun possessives are dropped
  (``"the two dogs"`` -> ``"dog"``; ``"his phone"`` -> ``"phone"``);
* a noun possessive drops the possessor and keeps the possessed head phrase
  (``"the man's red hat"`` -> ``"red hat"``); the offline parser additionally emits the possessor as
  its own phrase, since it is usually visible too;
* collective/partitive quantifiers are peeled (``"a group of people"`` -> ``"person"``,
  ``"slice of pizza"`` -> ``"pizza"``); containers are not (``"cup of coffee"`` stays, the head is
  ``"cup"``);
* evaluative, size, age and vague adjectives are dropped (``"cute little dog"`` -> ``"dog"``) as
  they are not stable visual attributes; colours, materials, patterns, shapes, states and noun
  modifiers stay (``"striped wooden chair"``);
* the head noun (the last word, or the word before ``of``) is singularised by rule with an
  irregular table (``people`` -> ``person``, ``knives`` -> ``knife``); mass and plural-only nouns
  stay (``sheep``, ``jeans``, ``scissors``; bare ``glasses`` means eyewear and stays);
* a phrase is *groundable* when it can be pointed at in pixels: abstract nouns, whole scenes and
  places, times, weather, events/actions, pure colours/quantities and pronouns are not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def _words(text: str) -> list[str]:
    """The words of a word-list literal (``#`` lines are comments)."""
    return [
        w for line in text.splitlines() if not line.strip().startswith("#") for w in line.split()
    ]


__all__ = [
    "COLOURS",
    "COLOUR_NOUNS",
    "DETERMINERS",
    "DROP_ADJECTIVES",
    "NUMBERS",
    "clean_concepts",
    "head_index",
    "is_groundable",
    "normalize_phrase",
    "singularize",
]

# --- word lists ---------------------------------------------------------------------------------

DETERMINERS = frozenset(
    _words(
        """
        a an the this that these those some any each every either neither another all both
        no his her their its my your our whose which what such
        """
    )
)
NUMBERS = frozenset(
    _words(
        """
        one two three four five six seven eight nine ten eleven twelve thirteen fourteen
        fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty hundred
        hundreds thousand thousands dozen dozens several many few multiple numerous various
        plenty lots half single double triple couple
        """
    )
)
# "double" and "single" also form compounds ("double decker"); they are only dropped when leading
# and followed by a word we keep.
_NUMBERS_KEEP_IN_COMPOUND = frozenset({"double", "single", "triple"})

COLOURS = frozenset(
    _words(
        """
        red orange yellow green blue purple violet pink brown black white gray grey silver
        gold golden beige tan maroon navy teal turquoise cyan magenta lime olive cream ivory
        crimson scarlet lavender burgundy bronze copper khaki colorful colourful
        multicolored multicoloured blond blonde brunette dark light bright pale neon pastel
        transparent clear
        """
    )
)
# Colour words that are also things ("an orange", "the lime", "a light").
COLOUR_NOUNS = frozenset(
    _words(
        """
    orange lime olive gold silver cream ivory copper bronze light
    """
    )
)
DROP_ADJECTIVES = frozenset(
    _words(
        """
        # evaluative / emotional
        beautiful pretty cute nice lovely adorable delicious tasty yummy gorgeous good great fine
        awesome amazing wonderful fancy happy sad funny cool perfect stunning elegant
        charming fresh healthy favorite favourite interesting
        # size
        big small large little huge tiny giant enormous tall short long wide narrow massive
        medium mini miniature oversized
        # age
        old young new older younger elderly aged
        # vague / quantity
        other another different various assorted same certain main whole entire only several
        many multiple numerous some few own full-size
        # weather of the whole day (the objects are still there)
        sunny cloudy rainy foggy overcast
        """
    )
)
_POSSESSIVE_PRONOUNS = frozenset(["his", "her", "their", "its", "my", "your", "our", "whose"])
_COLLECTIVES = frozenset(
    _words(
        """
        group bunch herd flock pack pair couple lot lots number variety pile stack row line
        set collection bundle assortment selection series array handful cluster swarm school
        team crowd piece slice bit chunk portion half part side top bottom front back middle
        center centre edge end corner bar sheet strip kind type sort
        """
    )
)
# Heads that are never groundable, whatever modifies them.
UNGROUNDABLE_HEADS = frozenset(
    _words(
        """
        # abstract
        idea concept love time life beauty freedom happiness fun peace danger success moment
        thing things stuff something someone somebody anything everything nothing anyone
        everyone way distance air attention use purpose shape color colour size pattern
        style design theme mood feeling emotion quality variety number amount information
        sale display show attempt
        # scenes / views / meta
        scene view background foreground setting environment image shot snapshot closeup
        close-up angle perspective landscape scenery panorama interior exterior surrounding
        surroundings outdoors indoors outside inside atmosphere
        # places as a whole
        room kitchen bathroom bedroom office restaurant cafe store shop market supermarket
        mall classroom hallway lobby city town village neighborhood neighbourhood downtown
        countryside area place location spot region zone park zoo farm airport station
        stadium arena yard backyard world nature wilderness home
        # time / weather
        day daytime night nighttime morning evening afternoon noon midnight dawn dusk
        sunrise sunset weather season summer winter autumn week year hour minute rain storm
        fog mist sunlight daylight darkness
        # events / actions / activities
        game match race party wedding ceremony celebration event trick jump ride walk play
        performance activity competition practice meeting festival parade concert lesson
        breakfast lunch dinner brunch meal picnic trip journey vacation holiday contest
        tournament tennis soccer golf hockey skiing surfing snowboarding skateboarding
        swimming cooking shopping camping fishing hiking running
        # pronouns
        it they them he she him me we us you one ones other others each
        """
    )
)
# Heads that are not a concept alone ("top", "piece", "picture") but fine with a modifier
# ("tank top", "pizza slice", "framed picture").
_VAGUE_SINGLE = _COLLECTIVES | frozenset(
    _words(
        """
        picture photo photograph object item thing figure element detail surface
        """
    )
)

# --- singularisation ----------------------------------------------------------------------------

_IRREGULAR_PLURALS = {
    "people": "person",
    "persons": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "kids": "kid",
    "mice": "mouse",
    "lice": "louse",
    "geese": "goose",
    "feet": "foot",
    "teeth": "tooth",
    "oxen": "ox",
    "leaves": "leaf",
    "knives": "knife",
    "wives": "wife",
    "lives": "life",
    "wolves": "wolf",
    "shelves": "shelf",
    "halves": "half",
    "calves": "calf",
    "loaves": "loaf",
    "scarves": "scarf",
    "thieves": "thief",
    "elves": "elf",
    "hooves": "hoof",
    "sheaves": "sheaf",
    "quizzes": "quiz",
    "axes": "axe",
    "cacti": "cactus",
    "fungi": "fungus",
    "octopi": "octopus",
    "antennae": "antenna",
    "larvae": "larva",
    "vertebrae": "vertebra",
    "indices": "index",
    "matrices": "matrix",
    "vertices": "vertex",
    "appendices": "appendix",
    "radii": "radius",
    "nuclei": "nucleus",
    "stimuli": "stimulus",
    "criteria": "criterion",
    "phenomena": "phenomenon",
    "dice": "dice",
}
# Nouns with no (different) singular: mass nouns, plural-only nouns, zero plurals.
_INVARIANT = frozenset(
    _words(
        """
        sheep fish deer moose bison buffalo elk swine salmon trout cod tuna shrimp squid
        aircraft spacecraft hovercraft series species means news jeans pants trousers shorts
        tights leggings pajamas pyjamas overalls scissors pliers tongs tweezers binoculars
        goggles sunglasses eyeglasses headphones earphones clothes clothing grass rice hair
        furniture luggage baggage equipment food water snow sand broccoli lettuce spinach
        cattle police poultry wildlife foliage produce pasta spaghetti bread cheese meat
        corn wheat hay straw dirt mud gravel soil asphalt concrete wood steel metal glass
        plastic paper cloth fabric silk wool cotton leather lace denim milk coffee tea juice
        wine beer soda sauce soup butter sugar salt flour honey ice smoke steam fire traffic
        physics mathematics economics politics athletics gymnastics aerobics electronics
        graphics billiards darts measles mumps debris chess
        """
    )
)
_ALWAYS_S_SINGULAR = frozenset(
    _words(
        """
        bus gas lens canvas atlas iris walrus cactus octopus circus campus virus bonus
        census chorus platypus abacus hibiscus lotus stylus citrus eucalyptus minibus
        omnibus trolleybus asparagus hummus couscous tennis axis pelvis trellis chassis
        oasis basis crisis thesis mantis ibis christmas chaos bias alias plus
        """
    )
)
# -ies words whose singular ends in -ie (not -y).
_IE_SINGULARS = frozenset(
    _words(
        """
        cookie movie pie tie brownie zombie rookie hoodie selfie goalie magpie smoothie
        veggie beanie bootie freebie birdie collie genie necktie bowtie prairie calorie
        auntie lingerie pixie sortie hippie
        """
    )
)
# -oes plurals of -o nouns (shoes/toes/canoes are regular -oe + s).
_O_ES_SINGULARS = frozenset(
    _words(
        """
        potato tomato hero mosquito volcano tornado domino echo mango buffalo torpedo veto
        embargo cargo flamingo avocado
        """
    )
)
_CHE_SINGULARS = frozenset(
    _words(
        """
        moustache mustache niche cache avalanche quiche cliche headache ache creche attache
        microfiche
        """
    )
)
_IS_SINGULARS = frozenset(
    _words(
        """
        polis metropolis acropolis epidermis cannabis penis testis glottis clematis dais
        hubris marquis paris memphis
        """
    )
)
_U_SINGULARS = frozenset(
    _words(
        """
    menu emu tutu guru gnu haiku bayou tofu tiramisu
    """
    )
)
_MEN_EXCEPTIONS = frozenset(
    ["omen", "semen", "specimen", "abdomen", "stamen", "ramen", "amen", "hymen"]
)
_EYEWEAR_MODIFIERS = (
    frozenset(_words("reading safety protective swimming swim ski snow 3d sun eye prescription"))
    | COLOURS
)


def singularize(word: str) -> str:
    """The singular of an English noun, by rule plus an irregular table.

    Unknown words fall through the regular rules (``cars`` -> ``car``, ``boxes`` -> ``box``,
    ``berries`` -> ``berry``); mass and plural-only nouns are returned unchanged.
    """
    w = word.lower()
    if w in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[w]
    if w in _INVARIANT or w in _ALWAYS_S_SINGULAR or len(w) <= 3 or not w.isalpha():
        if "-" in w:  # "t-shirts" -> "t-shirt", "ice-creams"
            head, _, last = w.rpartition("-")
            return f"{head}-{singularize(last)}"
        return w
    if w.endswith("men") and w not in _MEN_EXCEPTIONS:  # firemen, policemen
        return w[:-3] + "man"
    if w.endswith("ies"):
        return w[:-1] if w[:-1] in _IE_SINGULARS else w[:-3] + "y"
    if w.endswith("ves"):
        return w[:-1]  # sleeves, gloves, olives; irregular -f/-fe plurals are in the table
    if w.endswith("oes"):
        return w[:-2] if w[:-2] in _O_ES_SINGULARS else w[:-1]
    if w.endswith(("sses", "shes", "xes", "zzes")):
        return w[:-2]
    if w.endswith("ches"):
        return w[:-1] if w[:-1] in _CHE_SINGULARS else w[:-2]
    if w.endswith("ses"):
        stem = w[:-2]
        if stem in _ALWAYS_S_SINGULAR or stem.endswith("bus"):
            return stem  # buses, lenses, cactuses
        return w[:-1]  # horses, houses, vases
    if w.endswith("us") and w[:-1] in _U_SINGULARS:
        return w[:-1]
    if w.endswith(("ss", "us", "ous")):
        return w
    if w.endswith("is"):
        # "skis", "taxis", "kiwis" are plurals; singular -is nouns are listed.
        return w if w in _IS_SINGULARS else w[:-1]
    if w.endswith("s"):
        return w[:-1]
    return w


# --- phrases ------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['’][a-z]+|[-'][a-z0-9]+)*['’]?")
_DIGITS_RE = re.compile(r"^\d+(?:st|nd|rd|th|s)?$")


def _tokens(text: str) -> list[str]:
    return [t.replace("’", "'") for t in _TOKEN_RE.findall(text.lower())]


_CONTRACTIONS = frozenset(
    _words(
        """
        it's that's there's here's what's he's she's who's let's where's how's
        """
    )
)


def _is_possessive(token: str) -> bool:
    return token.endswith(("'s", "s'")) and len(token) > 2 and token not in _CONTRACTIONS


def head_index(tokens: list[str]) -> int:
    """Index of the head noun: the word before the first ``of``, else the last word."""
    if "of" in tokens[1:]:
        return tokens.index("of", 1) - 1
    return len(tokens) - 1


def _is_number(token: str) -> bool:
    return token in NUMBERS or bool(_DIGITS_RE.match(token))


def normalize_phrase(text: str) -> str | None:
    """Canonical concept string for a raw noun phrase, or ``None`` when nothing is left.

    >>> normalize_phrase("The Two Red Cars!")
    'red car'
    >>> normalize_phrase("the man's hat")
    'hat'
    >>> normalize_phrase("a group of people")
    'person'
    """
    tokens = _tokens(text)
    # A noun possessive: keep what the possessor owns.
    for i in range(len(tokens) - 1, -1, -1):
        if _is_possessive(tokens[i]) and tokens[i] not in _POSSESSIVE_PRONOUNS:
            if i + 1 < len(tokens):
                tokens = tokens[i + 1 :]
            else:  # "the dog's" alone: the possessor is all there is
                tokens[i] = tokens[i][:-2] if tokens[i].endswith("'s") else tokens[i][:-1]
            break
    tokens = [t.strip("'") for t in tokens if t.strip("'")]
    changed = True
    while tokens and changed:
        changed = False
        # Leading determiners and quantities: "the", "two", "several", "a couple of".
        while tokens and (tokens[0] in DETERMINERS or _is_number(tokens[0])):
            if (
                tokens[0] in _NUMBERS_KEEP_IN_COMPOUND
                and len(tokens) > 1
                and tokens[1] not in DROP_ADJECTIVES
                and tokens[1] not in DETERMINERS
                and tokens[1] != "of"
            ):
                break
            tokens = tokens[1:]
            changed = True
        # Collective/partitive quantifiers: "group of X" -> "X" (only when something follows).
        while (len(tokens) >= 3 and tokens[1] == "of" and tokens[0] in _COLLECTIVES) or (
            len(tokens) >= 4
            and tokens[2] == "of"
            and tokens[1] in _COLLECTIVES
            and (tokens[0] in DROP_ADJECTIVES or tokens[0] in DETERMINERS)
        ):
            tokens = tokens[tokens.index("of") + 1 :]
            changed = True
        if tokens and tokens[0] == "of":
            tokens = tokens[1:]
            changed = True
    if not tokens:
        return None
    # Drop evaluative/size/age adjectives and adverbs among the modifiers (never the head).
    head = head_index(tokens)
    kept = [
        t
        for i, t in enumerate(tokens)
        if i >= head or (t not in DROP_ADJECTIVES and not (t.endswith("ly") and t not in _LY_KEEP))
    ]
    head = head_index(kept)
    # Bare "glasses" (or "reading glasses") is eyewear; "wine glasses" are drinking glasses.
    eyewear = kept[head] == "glasses" and (head == 0 or kept[head - 1] in _EYEWEAR_MODIFIERS)
    if not eyewear:
        kept[head] = singularize(kept[head])
    phrase = " ".join(kept).strip()
    return phrase or None


_LY_KEEP = frozenset(
    _words(
        """
        jelly belly lily fly butterfly dragonfly firefly family holly bully rally ally tally
        assembly supply italy july anomaly monopoly doily gully curly woolly wooly frilly
        sparkly bubbly prickly wrinkly scaly
        """
    )
)


def is_groundable(phrase: str) -> bool:
    """Whether a *normalised* phrase names something that can be segmented in pixels.

    False for abstract nouns, whole scenes/places/views, times and weather, events and actions,
    pronouns, pure colours or quantities, vague single words (``"top"``, ``"piece"``) and phrases
    longer than six words.
    """
    tokens = phrase.split()
    if not tokens or len(tokens) > 6:
        return False
    head = tokens[head_index(tokens)]
    if head in UNGROUNDABLE_HEADS or head in DETERMINERS:
        return False
    if len(tokens) == 1 and head in COLOUR_NOUNS:
        return True
    if all(t in COLOURS or t in DROP_ADJECTIVES or _is_number(t) or t == "and" for t in tokens):
        return False
    if len(tokens) == 1 and head in _VAGUE_SINGLE:
        return False
    return "'" not in head and any(ch.isalpha() for ch in head)


def clean_concepts(phrases: Iterable[str], max_per_image: int | None = None) -> list[str]:
    """Normalise, drop ungroundable phrases, de-duplicate (first occurrence wins), cap.

    Args:
        phrases: raw noun phrases in the order the parser found them.
        max_per_image: keep at most this many (``None`` keeps all).
    """
    seen: set[str] = set()
    out: list[str] = []
    for raw in phrases:
        phrase = normalize_phrase(raw)
        if phrase is None or phrase in seen or not is_groundable(phrase):
            continue
        seen.add(phrase)
        out.append(phrase)
        if max_per_image is not None and len(out) >= max_per_image:
            break
    return out
