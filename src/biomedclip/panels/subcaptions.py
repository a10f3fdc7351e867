"""Split a figure caption into the text shared by all panels and one subcaption per panel label.

Rules, no model: a caption names its panels with *leading* markers (``(A) text``, ``A text``, ``A, text``,
``A: text``, ``A. text``, ranges and lists ``(A–C)``, ``(A and B)``, ``A, B``, nested ``A1``, roman ``(i)``) or
with *inline* markers after or before the words they describe (``…patient 1 (A), patient 2 (B)…``). Text before
the first marker, abbreviation lists, pointers to details elsewhere and sentences naming only other panels are
shared. Text naming several panels is given to each of them; a sentence of a multi-panel segment that names its
panels inline is split between them (the common words go to each). Positional words (``(left)``, ``Right:``)
go to :attr:`Subcaptions.positions`, never to ``parts``.

A letter counts as a panel label only inside a marker (brackets, or a bare letter opening a sentence) and only
when the caption's letters form a plausible run from ``a``: ``Figure 2A``, ``(n = 3)``, ``type A``, ``vitamin
C``, ``A549``, ``(P < 0.05)`` are never labels.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x")
_LABEL = r"(?:[A-Za-z](?:\d{1,2})?(?![\w′'’]))"
_RANGE_SEP = r"\s*(?:[-–—]|\s(?:to|through)\s)\s*"
_ITEM = rf"{_LABEL}(?:{_RANGE_SEP}{_LABEL})?"
_LIST_SEP = r"\s*(?:,\s*and|,|and|&)\s*"
_LIST = rf"{_ITEM}(?:{_LIST_SEP}{_ITEM})*"
_ROMAN_LABEL = r"(?:viii|vii|iii|ix|iv|vi|ii|v|x|i)"

# "(A)", "(A, B)", "(A and B)", "(a–c)", "(A1)", "(A–B, E–F)"; also "(i)"..."(x)".
_PAREN_MARKER = re.compile(rf"[(\[]\s*(?:[Pp]anels?\s+)?({_LIST})\s*[)\]]")
_PAREN_ROMAN = re.compile(rf"\(\s*({_ROMAN_LABEL}(?:{_LIST_SEP}{_ROMAN_LABEL})*)\s*\)")
# A bare marker opening a sentence: "A Text", "A, Text", "A: text", "A. Text", "A, B Text", "E–G Text".
_BARE_MARKER = re.compile(rf"(?<![\w(\[])({_LIST})(?:\s*[.:,)]\s+|\s+)(?=[A-Z0-9“\"'(\[]|[a-z]{{1,3}}[A-Z-])")
# "Panel A shows…", "Panels C and D: …" opening a sentence.
_PANEL_WORD_MARKER = re.compile(rf"\b[Pp]anels?\s+({_LIST})\b(?:\s*[.:,)])?\s+")
# A sentence ends at . ! ? before a capital, digit, bracket, quote or footnote sign, or a lower-case panel
# letter opening the next sentence ("… b Western blot", "… c, Quantification", "… d qPCR").
_NEXT_SENTENCE = r"(?=[A-Z0-9(\[“\"'‘*#†‡]|[a-z]\d{0,2}(?:\s+[A-Za-z]|[.:,)]\s))"
# A full stop glued to the next panel's marker, as captions extracted from XML often are: "…thermogenesis.A. SLC25A
# family…", "…feeding.B. Proteinase K…", "…survival.A Whole cell…", "…cells.(B) Quantification…".
_GLUED_MARKER = re.compile(r"(?<=[a-z0-9)\]][.!?])(?=\([A-Za-z]\d{0,2}\)|[A-Z]\d{0,2}(?:[.:,)]?\s+[A-Z]|[.:,)]\s))")
_SENTENCE_END = re.compile(rf"[.!?]\s+{_NEXT_SENTENCE}")
_CLAUSE_END = re.compile(rf"[.!?:]\s+{_NEXT_SENTENCE}")
_POSITION = r"(?:upper|lower|top|bottom|middle)?\s*-?\s*(?:left|right|top|bottom|middle|upper|lower|centre|center)"
_PAREN_POSITION = re.compile(rf"\(\s*({_POSITION})(?:\s+(?:panels?|rows?|columns?|images?))?\s*\)", re.IGNORECASE)
_LEAD_POSITION = re.compile(
    rf"(?:^|(?<=[.;:!?]\s))({_POSITION})(?:\s+(?:panels?|rows?|columns?|images?))?\s*[:,.]\s+", re.IGNORECASE
)
# Words that say a letter after them is not a panel label ("type A", "vitamin C", "Figure 2 B").
_NOT_LABEL_BEFORE = re.compile(
    r"(?:\b(?:type|types|vitamin|vitamins|group|groups|class|classes|subtype|hepatitis|protein|kinase|complex|"
    r"influenza|factor|chain|site|domain|isoform|form|region|zone|lane|phase|grade|stage|category)\s*|"
    r"\b(?:fig|figs|figure|figures|table|tables|supplementary|appendix)\.?\s*[S]?\d+\s*)$",
    re.IGNORECASE,
)
_ABBREVIATIONS = re.compile(
    r"(?:\b(?:e\.g|i\.e|vs|al|fig|figs|approx|ca|cf|no|nos|ref|resp|sp|spp|etc|st|dr)|\b[A-Z])$"
)
_SHARED_CUE = re.compile(
    r"^(?:[*#†‡]|additional details|details|for details|see |scale bars?\b|all (?:panels|images|data|experiments)|"
    r"in all panels|in both panels|data (?:are|represent|shown)|source data|abbreviations?\b)|"
    r"\b(?:can be found|are (?:provided|available) (?:in|at)|in (?:all|both|each) (?:panels?|plots?|graphs?)|"
    r"(?<=\w )for both\b|both panels|all panels|each panel)",
    re.IGNORECASE,
)
_ENUMERATION_GAP = re.compile(r"(?:,|,?\s+(?:and|or))\s*$")
_CONNECTOR = re.compile(r"^[\s,;]*(?:(?:and|or|as well as|versus|vs\.?|respectively)\b[\s,]*)*", re.IGNORECASE)
_TRAILING_CONNECTOR = re.compile(r"[\s,;]*(?:\b(?:and|or|as well as|versus|vs\.?)[\s,]*)*$", re.IGNORECASE)
_FUNCTION_WORDS = {"in", "of", "for", "and", "or", "with", "between", "by", "from", "to", "at", "on", "as"}


@dataclass
class Subcaptions:
    """A caption split: ``shared`` text (or None) and each panel label's own text (label -> text)."""

    shared: str | None
    parts: dict[str, str]
    positions: dict[str, str] = field(default_factory=dict)

    def text_for(self, label: str) -> str | None:
        """The own text of ``label`` (case-insensitive; "A1" falls back to "A", "A" to its "A1", "A2"…), else None."""
        key = label.strip("()[]. ").lower()
        found = {name.lower(): text for name, text in self.parts.items() if text}
        if not key:
            return None
        if key in found:
            return found[key]
        if len(key) > 1 and key[1:].isdigit() and key[0] in found:
            return found[key[0]]
        children = [text for name, text in found.items() if name[0] == key and name[1:].isdigit()]
        return " ".join(children) or None


@dataclass
class _Marker:
    start: int
    end: int
    labels: list[str]
    continues: bool = False  # the next item of an enumeration opened by the previous leading marker


def split_caption(caption: str | None, labels: list[str] | None = None) -> Subcaptions:
    """Split ``caption`` into shared text and per-label subcaptions.

    Args:
        caption: the figure caption (None or empty gives an empty result).
        labels: the panel labels to return, if known (e.g. read from the image). Then ``parts`` has exactly
            these keys, matched to the caption's labels case-insensitively; a label the caption does not
            describe gets an empty string.

    Returns:
        ``Subcaptions`` with the shared text and each label's own text (several labels may share one text).
    """
    text = _normalise(caption or "")
    wanted = _wanted_letters(labels)
    parts, shared_spans, positions = _split(text, wanted)
    shared = _join(shared_spans) or None
    if labels is None:
        return Subcaptions(shared, {label: _join(spans) for label, spans in parts.items()}, positions)
    return Subcaptions(shared, _select(parts, positions, labels), positions)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _wanted_letters(labels: list[str] | None) -> set[str] | None:
    if labels is None:
        return None
    return {label.strip("()[]. ").lower() for label in labels if label}


def _select(parts: dict[str, list[str]], positions: dict[str, str], labels: list[str]) -> dict[str, str]:
    """Exactly the requested labels: own text (or a parent's, or the children's, see ``text_for``), else a
    position's text ("left"), else the empty string."""
    found = Subcaptions(None, {label: _join(spans) for label, spans in parts.items()}, positions)
    return {label: found.text_for(label) or positions.get(label.strip().lower(), "") for label in labels}


def _join(spans: list[str]) -> str:
    out: list[str] = []
    for span in spans:
        span = _TRAILING_CONNECTOR.sub("", span.strip())
        if span and span not in out:
            out.append(span)
    return " ".join(out)


# --- markers ---------------------------------------------------------------------------------------------


def _expand(label_list: str) -> list[str]:
    """ "A–C, E" -> ["A", "B", "C", "E"]; "A1-A3" -> ["A1", "A2", "A3"]; roman lists kept as they are."""
    labels: list[str] = []
    for item in re.split(_LIST_SEP, label_list.strip()):
        ends = [e for e in re.split(_RANGE_SEP, item) if e]
        if (
            len(ends) == 2
            and ends[0].lower() in _ROMAN
            and ends[1].lower() in _ROMAN
            and len(ends[0]) + len(ends[1]) > 2
        ):
            lo, hi = _ROMAN.index(ends[0].lower()), _ROMAN.index(ends[1].lower())
            labels.extend(_ROMAN[lo : hi + 1] if lo <= hi else ends)
        elif len(ends) == 2 and ends[0][0].isalpha() and ends[1][0].isalpha():
            a, b = ends
            if a[1:] and b[1:] and a[0] == b[0]:
                labels.extend(f"{a[0]}{n}" for n in range(int(a[1:]), int(b[1:]) + 1))
            elif not a[1:] and not b[1:] and ord(a) <= ord(b) and ord(b) - ord(a) < 26:
                labels.extend(chr(c) for c in range(ord(a), ord(b) + 1))
            else:
                labels.extend(ends)
        else:
            labels.extend(ends)
    return labels


def _letter_index(label: str) -> int:
    return ord(label[0].lower()) - ord("a")


def _plausible_run(letters: set[str]) -> bool:
    """Panel letters start at "a" and skip at most a few: {A, B, D} yes, {C}, {B, T} no."""
    if not letters:
        return False
    indices = sorted({_letter_index(label) for label in letters})
    return indices[0] == 0 and indices[-1] + 1 - len(indices) <= max(1, len(indices) // 3)


def _run_from_a(markers: list[_Marker]) -> list[_Marker]:
    """The markers whose letters belong to the run a, b, c… (one missing letter at most between two): a stray
    "(i)" of a sub-list or "(T)" after panels A–C is dropped, the panels kept."""
    indices = sorted({_letter_index(label) for m in markers for label in m.labels})
    run: set[int] = set()
    for index in indices:
        if index == 0 or (run and index - max(run) <= 2):
            run.add(index)
        elif run:
            break
    return [m for m in markers if all(_letter_index(label) in run for label in m.labels)]


def _sentence_starts(text: str, colons: bool = True) -> set[int]:
    """Offsets where a sentence (or, with ``colons``, a clause after a colon) begins."""
    starts = {0}
    for match in (_CLAUSE_END if colons else _SENTENCE_END).finditer(text):
        before = text[max(0, match.start() - 16) : match.start()]
        if text[match.start()] == "." and _ABBREVIATIONS.search(before) and not re.search(r"\b[A-Z]$", before[-3:]):
            continue
        starts.add(match.end())
    starts.update(match.end() for match in _GLUED_MARKER.finditer(text))
    return starts


def _paren_markers(text: str, roman: bool) -> list[_Marker]:
    pattern = _PAREN_ROMAN if roman else _PAREN_MARKER
    markers = []
    for match in pattern.finditer(text):
        if _NOT_LABEL_BEFORE.search(text[max(0, match.start() - 40) : match.start()]):
            continue
        labels = [label.lower() for label in re.split(_LIST_SEP, match.group(1))] if roman else _expand(match.group(1))
        markers.append(_Marker(match.start(), match.end(), labels))
    return markers


def _bare_markers(text: str, starts: set[int]) -> list[_Marker]:
    """Bare leading markers ("A Text", "B, Text") at sentence starts, kept only as a run A, B, C..."""
    candidates = []
    matches = sorted([*_BARE_MARKER.finditer(text), *_PANEL_WORD_MARKER.finditer(text)], key=lambda m: m.start())
    for match in matches:
        at_start = match.start() in starts
        after_title = not at_start and match.start() > 0 and not candidates
        if not (at_start or after_title):
            continue
        label_text = match.group(1)
        if label_text.lower() in {"a", "i"} and re.match(r"[a-z]", text[match.end() :]) and match.re is _BARE_MARKER:
            continue  # the article "A map of…", the pronoun "I"
        labels = _expand(label_text)
        if any(len(label) > 1 and not label[1:].isdigit() for label in labels):
            continue
        candidates.append((_Marker(match.start(), match.end(), labels), at_start))
    chain: list[_Marker] = []
    for marker, at_start in candidates:
        first = _letter_index(marker.labels[0])
        previous = _letter_index(chain[-1].labels[-1]) if chain else -1
        if (not chain and first == 0) or (chain and 0 < first - previous <= 2 and at_start):
            chain.append(marker)
    return chain if len(chain) >= 2 or (chain and len(chain[0].labels) >= 2) else []


def _leading(markers: list[_Marker], text: str, starts: set[int]) -> list[_Marker]:
    """The markers that open a sentence or clause (their text follows them), and the next letters of an
    enumeration they open in the same sentence ("(A) control, (B) treated, and (C) knockout cells")."""
    leading: list[_Marker] = []
    for marker in markers:
        opens_clause = marker.start in starts or text[max(0, marker.start - 8) : marker.start].rstrip()[-1:] == ";"
        if opens_clause:
            leading.append(marker)
        elif leading and _continues(text, leading[-1], marker, starts):
            marker.continues = True
            leading.append(marker)
    if leading and _letter_index(leading[0].labels[0]) > 0:  # "Title without full stop (A–B) Text. (C) Text."
        before = _letter_index(leading[0].labels[0]) - 1
        first = [m for m in markers if m.end <= leading[0].start and _letter_index(m.labels[0]) == 0]
        if first and _letter_index(first[-1].labels[-1]) == before and re.match(r"\s*[A-Z]", text[first[-1].end :]):
            leading.insert(0, first[-1])
    return leading


def _continues(text: str, previous: _Marker, marker: _Marker, starts: set[int]) -> bool:
    """Whether ``marker`` is the next letter after ``previous`` in one sentence, after its item and a comma/and."""
    between = text[previous.end : marker.start]
    same_sentence = not any(offset in starts for offset in range(previous.end + 1, marker.start + 1))
    next_letter = _letter_index(marker.labels[0]) - _letter_index(previous.labels[-1]) == 1
    has_item = bool(_CONNECTOR.sub("", between).strip())
    return same_sentence and next_letter and has_item and bool(_ENUMERATION_GAP.search(between))


# --- splitting ---------------------------------------------------------------------------------------------


def _split(text: str, wanted: set[str] | None) -> tuple[dict[str, list[str]], list[str], dict[str, str]]:
    if not text:
        return {}, [], {}
    starts = _sentence_starts(text)
    roman = _uses_roman(text, wanted)
    paren = _paren_markers(text, roman)
    leading = _leading(paren, text, starts)
    if not roman:
        bare = _bare_markers(text, starts)
        taken = {m.start for m in leading}
        leading = sorted(leading + [m for m in bare if m.start not in taken], key=lambda m: m.start)
    leading, absorbed = _absorb_following(text, leading, paren)
    opening = {m.start for m in leading} | absorbed
    leading, inline = _valid(leading, [m for m in paren if m.start not in opening], wanted)
    parts: dict[str, list[str]] = {}
    shared: list[str] = []
    if leading:
        described = {label for m in leading for label in m.labels}
        orphans = [m for m in inline if not set(m.labels) & described]
        _split_inline_only(text, 0, leading[0].start, orphans, parts, shared)
        _split_segments(text, leading, inline, parts, shared)
    else:
        _split_inline_only(text, 0, len(text), inline, parts, shared)
    positions, positional = _positions(text)
    shared = [span for span in shared if not any(span.strip() and span.strip() in used for used in positional)]
    return parts, shared, positions


def _absorb_following(text: str, leading: list[_Marker], paren: list[_Marker]) -> tuple[list[_Marker], set[int]]:
    """ "(A) and (B) Western blots…": markers right after a leading one, joined by "and"/",", lead with it.

    Returns the leading markers so extended and the starts of the markers they absorbed."""
    starts = [m.start for m in paren]
    merged, absorbed = [], set()
    for marker in leading:
        index = bisect_left(starts, marker.end)
        while index < len(paren) and not _CONNECTOR.sub("", text[marker.end : paren[index].start]).strip():
            follower = paren[index]
            marker = _Marker(marker.start, follower.end, marker.labels + follower.labels)
            absorbed.add(follower.start)
            index += 1
        merged.append(marker)
    return merged, absorbed


def _uses_roman(text: str, wanted: set[str] | None) -> bool:
    if wanted is not None:
        return bool(wanted) and all(label in _ROMAN for label in wanted) and not all(len(w) == 1 for w in wanted)
    return bool(re.search(r"\(\s*ii\s*\)", text)) and not re.search(r"\(\s*[bB]\s*\)", text)


def _valid(
    leading: list[_Marker], inline: list[_Marker], wanted: set[str] | None
) -> tuple[list[_Marker], list[_Marker]]:
    """Keep the markers whose labels are panel labels: a plausible run of letters, and any requested label."""
    kept_leading, kept_inline = [], []
    letters = {label for m in leading + inline for label in m.labels}
    if letters and all(label in _ROMAN for label in letters):
        kept_leading, kept_inline = leading, inline
    else:
        for keep_leading, keep_inline in ((leading, inline), (leading, []), ([], inline)):
            run = {id(m) for m in _run_from_a(keep_leading + keep_inline)}
            letters = {label for m in keep_leading + keep_inline if id(m) in run for label in m.labels}
            if _plausible_run(letters):
                kept_leading = [m for m in keep_leading if id(m) in run]
                kept_inline = [m for m in keep_inline if id(m) in run]
                break
    if wanted is None:
        return kept_leading, kept_inline
    letters = {label[0] for label in wanted if label}

    def requested(marker: _Marker) -> bool:
        return any(label.lower() in wanted or label.lower()[0] in letters for label in marker.labels)

    kept = {id(m) for m in kept_leading + kept_inline}
    return [m for m in leading if id(m) in kept or requested(m)], [m for m in inline if id(m) in kept or requested(m)]


def _sentences(text: str, start: int, end: int, starts: list[int]) -> list[tuple[int, int]]:
    """The non-blank spans of ``text[start:end]`` cut at ``starts`` (sorted offsets)."""
    cuts = [start, *starts[bisect_right(starts, start) : bisect_left(starts, end)]]
    return [(a, b) for a, b in zip(cuts, [*cuts[1:], end], strict=True) if text[a:b].strip()]


def _within(markers: list[_Marker], a: int, b: int) -> list[_Marker]:
    """The markers (sorted by start) that start in ``[a, b)``."""
    offsets = [m.start for m in markers]
    return markers[bisect_left(offsets, a) : bisect_left(offsets, b)]


def _split_segments(
    text: str, leading: list[_Marker], inline: list[_Marker], parts: dict[str, list[str]], shared: list[str]
) -> None:
    sentence_starts = sorted(_sentence_starts(text))
    orphans = {label for m in inline for label in m.labels} - {label for m in leading for label in m.labels}
    suffixes = _enumeration_suffixes(text, leading, sentence_starts)
    for index, marker in enumerate(leading):
        end = leading[index + 1].start if index + 1 < len(leading) else len(text)
        own = set(marker.labels)
        is_last = index + 1 == len(leading)
        to_shared = False
        for number, (a, b) in enumerate(_sentences(text, marker.end, end, sentence_starts)):
            sentence = text[a:b]
            mentions = _within(inline, a, b)
            named = {label for m in mentions for label in m.labels}
            if named and named <= orphans:  # "D Knockdown of X, as well as (E) inhibition of Y, reduced Z."
                if number == 0:  # the sentence its marker opens is the marker's panels' too
                    for label in marker.labels:
                        parts.setdefault(label, []).append(sentence)
                for label, piece in _inline_pieces(text, a, b, mentions).items():
                    parts.setdefault(label, []).append(piece)
                continue
            about_others = bool(named - own) and len(named) >= 2  # "For (A) and (B), dot size is…"
            if number > 0 and (to_shared or about_others or (is_last and _is_shared(sentence))):
                to_shared = to_shared or is_last
                shared.append(sentence)
                continue
            if len(own) > 1 and len(mentions) > 1 and named <= own:
                pieces = _inline_pieces(text, a, b, mentions)
                for label in marker.labels:
                    parts.setdefault(label, []).append(pieces.get(label, sentence))
                continue
            if number == 0 and index in suffixes:
                sentence = f"{_TRAILING_CONNECTOR.sub('', sentence.strip())} {suffixes[index]}"
            for label in marker.labels:
                parts.setdefault(label, []).append(sentence)


def _enumeration_suffixes(text: str, leading: list[_Marker], sentence_starts: list[int]) -> dict[int, str]:
    """ "(A) Body weight and (B) water intake were recorded weekly.": the words after the last item (as long as the
    item before it) complete every item -> {index of (A): "were recorded weekly."}."""
    suffixes: dict[int, str] = {}
    index = 0
    while index < len(leading):
        last = index
        while last + 1 < len(leading) and leading[last + 1].continues:
            last += 1
        if last > index:
            between = text[leading[last - 1].end : leading[last].start]
            previous_item = _TRAILING_CONNECTOR.sub("", _CONNECTOR.sub("", between)).split()
            end = leading[last + 1].start if last + 1 < len(leading) else len(text)
            spans = _sentences(text, leading[last].end, end, sentence_starts)
            words = text[spans[0][0] : spans[0][1]].split() if spans else []
            if previous_item and len(words) > len(previous_item):
                for member in range(index, last):
                    suffixes[member] = " ".join(words[len(previous_item) :])
        index = last + 1
    return suffixes


def _split_inline_only(
    text: str, start: int, end: int, inline: list[_Marker], parts: dict[str, list[str]], shared: list[str]
) -> None:
    """Sentences naming panels only inline: each named panel gets its piece and the sentences that follow."""
    current: list[str] = []
    for a, b in _sentences(text, start, end, sorted(_sentence_starts(text))):
        sentence = text[a:b]
        mentions = _within(inline, a, b)
        if mentions:
            pieces = _inline_pieces(text, a, b, mentions)
            current = list(pieces)
            for label, piece in pieces.items():
                parts.setdefault(label, []).append(piece)
        elif current and not _is_shared(sentence):
            for label in current:
                parts[label].append(sentence)
        else:
            current = []
            shared.append(sentence)


def _is_shared(sentence: str) -> bool:
    return bool(_SHARED_CUE.search(sentence.strip())) or _is_abbreviation_list(sentence)


def _is_abbreviation_list(sentence: str) -> bool:
    """ "KEGG, Kyoto Encyclopedia…; WP, WikiPathways." or "CR circadian rhythm, GO gene ontology, …"."""
    items = [item.strip() for item in re.split(r"[;,]", sentence) if item.strip()]
    defined = [item for item in items if re.match(r"^[A-Z][A-Za-z0-9-]*[A-Z0-9][a-z]?\b(?:\s+\S|$)", item)]
    return len(defined) >= 2 and len(defined) * 2 >= len(items) and bool(defined) and items[0] in defined


def _inline_pieces(text: str, a: int, b: int, mentions: list[_Marker]) -> dict[str, str]:
    """One sentence naming its panels inline: each label gets the common words and its own item.

    Postfix ("…KEGG database (B), REACTOME database (C)…"): a label's item ends at its marker. Prefix ("…involved
    in (F) “cell cycle” or (G) “migration”…"): a label's item follows its marker.
    """
    mentions = _merge_adjacent(text, mentions)
    first = mentions[0]
    words_before = text[a : first.start].split()
    prefix_style = bool(words_before) and (words_before[-1].lower() in _FUNCTION_WORDS or words_before[-1] == ",")
    pieces: dict[str, str] = {}
    if prefix_style:
        head = text[a : first.start]
        for index, marker in enumerate(mentions):
            stop = mentions[index + 1].start if index + 1 < len(mentions) else b
            item = _TRAILING_CONNECTOR.sub("", text[marker.start : stop])
            for label in marker.labels:
                pieces[label] = _compose(head, item, "")
        return pieces
    tail = _CONNECTOR.sub("", text[mentions[-1].end : b])
    if len(mentions) == 1:
        return {label: text[a:b] for label in first.labels}
    items = []
    for index, marker in enumerate(mentions):
        begin = a if index == 0 else mentions[index - 1].end
        items.append(_CONNECTOR.sub("", text[begin : marker.start]))
    head, items[0] = _cut_first_item(items[0], items[1])
    for marker, item in zip(mentions, items, strict=True):
        for label in marker.labels:
            pieces[label] = _compose(head, f"{item.rstrip()} {text[marker.start : marker.end]}", tail)
    return pieces


def _merge_adjacent(text: str, mentions: list[_Marker]) -> list[_Marker]:
    """ "(a) and (b)" with nothing between them is one mention of both."""
    merged = [mentions[0]]
    for marker in mentions[1:]:
        if not _CONNECTOR.sub("", text[merged[-1].end : marker.start]).strip():
            previous = merged[-1]
            merged[-1] = _Marker(previous.start, marker.end, previous.labels + marker.labels)
        else:
            merged.append(marker)
    return merged


def _cut_first_item(first: str, second: str) -> tuple[str, str]:
    """Split the first item into the words common to all items and its own words, judged by the second item."""
    second_words = second.split()
    first_words = first.split()
    if not second_words or len(first_words) < 2:
        return "", first
    lead = second_words[0].lower()
    for position in range(len(first_words) - 1, 0, -1):
        if first_words[position].lower() == lead:
            return " ".join(first_words[:position]), " ".join(first_words[position:])
    keep = min(len(first_words) - 1, len(second_words))
    return " ".join(first_words[:-keep]), " ".join(first_words[-keep:])


def _compose(head: str, item: str, tail: str) -> str:
    joined = " ".join(part.strip() for part in (head, item, tail) if part.strip())
    return re.sub(r"\s+([.,;:])", r"\1", joined)


def _positions(text: str) -> tuple[dict[str, str], set[str]]:
    """Positional subcaptions ("Left: …", "…wild-type (top) and knockout (bottom)…" -> {"left": …}) and the
    sentences they came from."""
    positions: dict[str, list[str]] = {}
    used: set[str] = set()
    for a, b in _sentences(text, 0, len(text), sorted(_sentence_starts(text, colons=False))):
        sentence = text[a:b]
        lead = _LEAD_POSITION.match(sentence)
        if lead:
            positions.setdefault(_position_key(lead.group(1)), []).append(sentence[lead.end() :])
            used.add(sentence.strip())
            continue
        mentions = [
            _Marker(a + m.start(), a + m.end(), [_position_key(m.group(1))]) for m in _PAREN_POSITION.finditer(sentence)
        ]
        if len(mentions) >= 2:
            for label, piece in _inline_pieces(text, a, b, mentions).items():
                positions.setdefault(label, []).append(piece)
            used.add(sentence.strip())
    return {key: _join(spans) for key, spans in positions.items()}, used


def _position_key(words: str) -> str:
    return re.sub(r"[\s-]+", " ", words.strip().lower())
