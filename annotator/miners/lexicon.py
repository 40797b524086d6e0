"""A compact English lexicon for the offline noun-phrase chunker (captions and alt-text).

Not a general tagger: it knows the closed classes, the verbs and adjectives that captions use,
and the nouns that look like verbs (``building``, ``bed``, ``sign``). Unknown words are nouns,
because that is what captions are mostly made of.
"""

from __future__ import annotations

from annotator.concepts import COLOURS, DETERMINERS, DROP_ADJECTIVES, NUMBERS


def _words(text: str) -> list[str]:
    """The words of a word-list literal (``#`` lines are comments)."""
    return [
        w for line in text.splitlines() if not line.strip().startswith("#") for w in line.split()
    ]


__all__ = [
    "ADJECTIVES",
    "ADVERBS",
    "AUXILIARIES",
    "BOUNDARY_WORDS",
    "COLOURS",
    "COMPOUND_PARTICIPLES",
    "DETERMINERS",
    "NOUNS",
    "NOUN_VERBS",
    "NUMBERS",
    "PREPOSITIONS",
    "PRONOUNS",
    "VERBS",
    "VERBS_AFTER_SINGULAR",
    "inflections",
]

PREPOSITIONS = frozenset(
    _words(
        """
        in on at with of by near next to from under over behind beside besides above below
        across along alongside around through into onto inside outside within between
        against among amongst toward towards beneath underneath atop for during without like
        as off out up down past via upon throughout beyond amid amidst opposite per except
        than about after before until till
        """
    )
)
AUXILIARIES = frozenset(
    _words(
        """
        is are was were be been being am has have had do does did can could will would may
        might must shall should seems seem appears appear looks look 's 're 've
        """
    )
)
BOUNDARY_WORDS = frozenset(
    _words(
        """
        and or but nor while whereas although though because since so yet if that which who
        whom where when whose whilst there here then also not no nor either neither just
        even still while
        """
    )
)
PRONOUNS = frozenset(
    _words(
        """
        i me you he she it we they him us them someone something somebody anyone anything
        everyone everything nobody nothing itself himself herself themselves yourself
        ourselves myself mine yours hers ours theirs
        """
    )
)
SUBJECT_PRONOUNS = frozenset(["i", "you", "he", "she", "it", "we", "they"])
ADVERBS = frozenset(
    _words(
        """
        very really quite too also almost nearly slightly together away back somewhat rather
        partially mostly fully completely highly brightly freshly neatly closely tightly now
        already again ever often always never sometimes currently probably possibly clearly
        visible visibly
        """
    )
)

ADJECTIVES = (
    COLOURS
    | DROP_ADJECTIVES
    | frozenset(
        _words(
            """
            # materials
            wooden wood-paneled metal metallic plastic glass leather stone brick ceramic porcelain
            marble granite concrete steel iron stainless golden silver woven wicker rubber
            cotton woolen woollen wool denim silk velvet paper cardboard straw bamboo
            # patterns and shapes
            striped plaid checkered checked floral spotted dotted polka tartan patterned
            camouflage round square rectangular circular oval triangular curved flat pointed
            # states, textures, kinds
            empty open closed full wet dry dirty clean broken busy crowded calm snowy grassy
            sandy rocky dusty muddy windy stormy icy leafy fluffy furry hairy shiny glossy
            smooth rough wild tropical modern vintage antique plain electric digital
            wireless outdoor indoor public private cluttered messy tidy ripe raw cooked
            fried baked grilled roasted sliced chopped stuffed potted parked paved fenced
            tiled framed lit hot cold warm frozen melted burnt sweet spicy organic natural
            artificial decorative ornate rustic industrial residential urban rural
            commercial military medical domestic male female adult baby teenage asian
            african american italian french japanese chinese mexican indian mediterranean
            western eastern northern southern upper lower rear left right inner outer
            distant nearby overhead low high deep shallow thick thin heavy light soft hard
            loose tight curly straight wavy spiky bald bearded shirtless barefoot sleeveless
            transparent translucent reflective neon matching matte solid hollow double
            single triple twin wide-angle close-up
            """
        )
    )
)

# Nouns that the suffix rules would misread as verbs or participles.
NOUNS = frozenset(
    _words(
        """
        building painting ceiling clothing ring wing king string swing thing evening morning
        icing frosting topping stuffing pudding wedding railing awning bedding earring
        sibling dumpling duckling seedling sapling lightning crossing dressing filling
        seasoning siding landing parking wiring lining sling spring bling darling ping
        pudding offering bed shed sled seed weed reed steed bread head thread flatbed
        bobsled seabed sunbed flowerbed riverbed daybed forehead redhead speed breed feed
        tweed creed glasses sunglasses scissors jeans clothes pants shorts leggings
        headphones
        """
    )
)

# Verbs that are not (usually) nouns, as base forms; inflections are generated.
_VERB_BASES = [
    "sit",
    "hold",
    "eat",
    "wear",
    "carry",
    "lay",
    "lie",
    "look",
    "wait",
    "stare",
    "gaze",
    "peek",
    "peer",
    "crouch",
    "kneel",
    "bend",
    "lean",
    "smile",
    "talk",
    "read",
    "type",
    "chew",
    "lick",
    "sniff",
    "bite",
    "graze",
    "perch",
    "hug",
    "cuddle",
    "pet",
    "feed",
    "chase",
    "fetch",
    "throw",
    "catch",
    "swing",
    "kick",
    "hit",
    "serve",
    "pour",
    "stir",
    "spread",
    "slice",
    "chop",
    "bake",
    "grill",
    "fry",
    "prepare",
    "sleep",
    "rest",
    "relax",
    "nap",
    "yawn",
    "sip",
    "munch",
    "taste",
    "grab",
    "grip",
    "balance",
    "hang",
    "dangle",
    "drape",
    "pose",
    "gather",
    "surround",
    "overlook",
    "follow",
    "approach",
    "leave",
    "arrive",
    "enter",
    "exit",
    "pass",
    "cross",
    "travel",
    "drive",
    "steer",
    "tow",
    "haul",
    "transport",
    "deliver",
    "pack",
    "store",
    "hide",
    "appear",
    "seem",
    "become",
    "contain",
    "include",
    "feature",
    "depict",
    "show",
    "showcase",
    "display",
    "reveal",
    "capture",
    "illustrate",
    "portray",
    "sell",
    "buy",
    "use",
    "make",
    "take",
    "get",
    "go",
    "come",
    "move",
    "reach",
    "put",
    "place",
    "set",
    "arrange",
    "decorate",
    "fill",
    "open",
    "close",
    "pull",
    "push",
    "lift",
    "carry",
    "play",
    "watch",
    "see",
    "hear",
    "paint",
    "draw",
    "write",
    "wash",
    "clean",
    "brush",
    "comb",
    "dry",
    "fix",
    "repair",
    "build",
    "construct",
    "install",
    "attach",
    "mount",
    "climb",
    "jump",
    "run",
    "walk",
    "ride",
    "fly",
    "swim",
    "dive",
    "float",
    "sail",
    "paddle",
    "row",
    "skate",
    "ski",
    "surf",
    "skateboard",
    "snowboard",
    "race",
    "dance",
    "sing",
    "perform",
    "compete",
    "practice",
    "train",
    "teach",
    "learn",
    "celebrate",
    "frolic",
    "roam",
    "wander",
    "stroll",
    "hike",
    "jog",
    "cycle",
    "bike",
    "fish",
    "hunt",
    "park",
    "stop",
    "turn",
    "head",
    "face",
    "point",
    "wave",
    "cover",
    "line",
    "top",
    "crash",
    "fall",
    "trip",
    "break",
    "melt",
    "burn",
    "shine",
    "glow",
    "stand",
    "overlook",
    "spray",
    "splash",
    "drink",
    "cook",
    "cut",
    "wrap",
    "kiss",
    "shake",
    "blow",
    "fold",
    "roll",
    "tie",
    "sprinkle",
    "squeeze",
    "smell",
    "drop",
    "toss",
    "dip",
    "fill",
    "load",
    "unload",
    "board",
    "hold",
    "examine",
    "inspect",
    "check",
    "point",
    "adjust",
    "hand",
    "offer",
    "receive",
    "share",
    "admire",
    "observe",
    "rest",
    "dress",
    "flip",
    "rise",
    "burst",
    "crash",
    "howl",
    "bark",
    "graze",
    "nibble",
    "gallop",
    "trot",
    "pedal",
    "swim",
    "splash",
    "soak",
    "lounge",
    "sunbathe",
    "tan",
    "wade",
    "chat",
    "laugh",
    "cry",
    "shout",
    "yell",
    "sing",
    "whistle",
    "clap",
    "cheer",
    "protest",
    "march",
    "stack",
    "pile",
    "crowd",
    "line",
    "fill",
    "loom",
    "tower",
    "sit",
    "sprawl",
    "curl",
    "nestle",
    "snuggle",
    "peep",
    "emerge",
    "lead",
    "guide",
    "carry",
    "support",
    "protect",
    "block",
    "shelter",
    "shade",
    "frame",
    "border",
    "hover",
    "circle",
    "land",
    "depart",
    "taxi",
    "dock",
    "moor",
    "anchor",
    "tether",
    "leash",
    "saddle",
]

# Base forms that are as often nouns ("fruit stand", "street sign") as verbs.
NOUN_VERBS = frozenset(
    _words(
        """
        stand top line park ski surf fish dance race train board sign display show cover
        head face point ice frost plate pitch bat wave walk ride play drink cook cut slice
        pile stack crowd bike row paddle nap land wrap block mix fly skate skateboard
        snowboard sail rest shop light water flower box case dress tie dish brush comb
        hammer saw mop vacuum iron kick jump lift pour drive swim catch hit watch bowl glass
        fence frame hand arm bottle can cup cap hat taxi dock anchor leash saddle feature
        shade border circle shelter support guide tower trip fall spray splash hug kiss toss
        dip load check offer share frost hike jog cycle hunt stop turn smile look nap tan
        march cheer clap
        """
    )
)
# 3rd-person forms of noun-verbs that captions use as verbs right after a singular subject
# ("a man stands", "the image features"); other forms there are plural compounds
# ("street signs", "tennis rackets").
VERBS_AFTER_SINGULAR = frozenset(
    _words(
        """
        stands sits rides walks plays drinks flies waits looks shows lines covers leans
        rests races heads faces points waves lands cooks jumps kicks swims surfs skis skates
        dances pulls pushes watches hangs lays lies tops fills cuts climbs catches throws
        serves hits smiles crosses passes travels turns feeds drives parks sails floats
        grazes poses reaches features displays depicts shows frames borders shades guides
        towers stops
        """
    )
)
# Participles that form compound modifiers after a noun ("snow covered", "tree lined").
COMPOUND_PARTICIPLES = frozenset(
    _words(
        """
        covered topped filled lined shaped colored coloured themed based powered made
        stuffed paneled panelled tiled framed packed loaded drawn cooked baked grown fed
        """
    )
)
_IRREGULAR_FORMS = [
    "sat",
    "held",
    "rode",
    "ridden",
    "ate",
    "eaten",
    "drank",
    "drunk",
    "flew",
    "flown",
    "ran",
    "worn",
    "wore",
    "caught",
    "threw",
    "thrown",
    "hit",
    "cut",
    "put",
    "set",
    "laid",
    "lain",
    "hung",
    "took",
    "taken",
    "made",
    "got",
    "gotten",
    "went",
    "gone",
    "came",
    "seen",
    "saw",
    "left",
    "led",
    "fed",
    "built",
    "broken",
    "broke",
    "fallen",
    "fell",
    "driven",
    "drove",
    "given",
    "gave",
    "shown",
    "hidden",
    "spread",
    "sold",
    "bought",
    "brought",
    "told",
    "said",
    "sent",
    "spun",
    "swung",
    "stuck",
    "struck",
    "taught",
    "thought",
    "won",
    "written",
    "wrote",
    "woven",
    "bent",
    "knelt",
    "lit",
    "slept",
    "swept",
    "dug",
    "found",
    "kept",
    "lost",
    "met",
    "paid",
    "shot",
    "shut",
    "sung",
    "sang",
    "swam",
    "swum",
    "begun",
    "began",
    "froze",
    "frozen",
    "stolen",
    "stole",
    "stood",
    "blew",
    "blown",
    "drew",
    "drawn",
    "grew",
    "grown",
    "rose",
    "risen",
    "shook",
    "shaken",
    "wove",
    "tore",
    "torn",
]


def inflections(base: str) -> set[str]:
    """Every plausible inflected form of a regular English verb (over-generation is harmless)."""
    forms = {base}
    if base.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(base + "es")
    elif base.endswith("y") and len(base) > 1 and base[-2] not in "aeiou":
        forms.add(base[:-1] + "ies")
    else:
        forms.add(base + "s")
    if base.endswith("ie"):
        forms.add(base[:-2] + "ying")
    elif base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        forms.add(base[:-1] + "ing")
    else:
        forms.add(base + "ing")
    if base.endswith("e"):
        forms.add(base + "d")
    elif base.endswith("y") and len(base) > 1 and base[-2] not in "aeiou":
        forms.add(base[:-1] + "ied")
    else:
        forms.add(base + "ed")
    # Consonant doubling (sit -> sitting, drop -> dropped): generate both spellings.
    if (
        len(base) >= 3
        and base[-1] not in "aeiouwxy"
        and base[-2] in "aeiou"
        and base[-3] not in ("aeiou")
    ):
        forms.add(base + base[-1] + "ing")
        forms.add(base + base[-1] + "ed")
    return forms


VERBS: frozenset[str] = frozenset(
    {form for base in _VERB_BASES for form in inflections(base)} | set(_IRREGULAR_FORMS)
)
