"""Cutting streamed LLM text into phrases for TTS, and cleaning text before it is spoken.

The Session feeds each LLM delta to a :class:`PhraseSplitter` and sends every finished
phrase to TTS while the LLM keeps generating, so the first audio leaves after the first
phrase instead of after the whole reply. :func:`clean_for_speech` is applied to each phrase
just before TTS; the transcript sent to the client keeps the original text.
"""

from __future__ import annotations

import re

_END_PUNCT = ".!?;:…"
# Characters that may close a sentence after its punctuation: quotes, brackets, and
# markdown emphasis (``**Paris.** It is``).
_CLOSERS = "\"')]}»”’*_`"
# Words whose trailing period does not end a sentence (compared lower-case, without the
# final period).
_ABBREVIATIONS = frozenset(
    {
        *("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "gen", "col", "capt", "lt", "sgt"),
        *("rev", "hon", "vs", "approx", "e.g", "i.e", "cf", "fig", "inc", "ltd", "co", "corp", "dept"),
        *("jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"),
    }
)
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # "U.S", "a.m" (final dot cut off)
_OPENERS = "\"'([{«“‘*_`"


def _next_word_capitalized(buf: str, j: int) -> bool:
    """Whether the first word after index ``j`` starts with an upper-case letter."""
    k = j
    while k < len(buf) and (buf[k].isspace() or buf[k] in _OPENERS):
        k += 1
    if k >= len(buf) or not buf[k].isupper():
        return False
    # The pronoun "I" is capitalized mid-sentence too: "Well... I think so."
    return not (buf[k] == "I" and (k + 1 == len(buf) or not buf[k + 1].isalpha()))


def _period_ends_sentence(buf: str, i: int, j: int) -> bool:
    """Decide whether the single ``.`` at ``buf[i]`` (punctuation run ending at ``j``) ends a sentence."""
    start = i
    while start > 0 and not buf[start - 1].isspace():
        start -= 1
    token = buf[start:i].lstrip(_OPENERS)
    lower = token.lower()
    if lower in _ABBREVIATIONS or (len(token) == 1 and token.isupper() and token != "I"):
        return False  # "Dr. Smith", "e.g. this", "J. K. Rowling"
    if _DOTTED_ACRONYM.fullmatch(token):
        return False  # "U.S. Army": a missed cut only merges two phrases
    if lower == "etc":
        return _next_word_capitalized(buf, j)
    # "1. Open the door": a list number alone at the start of a phrase.
    return not (token.isdigit() and not buf[:start].strip())


class PhraseSplitter:
    """Cut a stream of text deltas into phrases worth sending to TTS one by one.

    Cuts after sentence ends (``. ! ? ; :`` followed by a space, and newlines), but not
    after abbreviations ("Dr.", "e.g.", "U.S.") or inside numbers ("3.14"). The first phrase
    of a response may also end at a clause boundary (comma, dash, ellipsis) once it has
    ``min_first_words`` words, so the first audio can start early. Any phrase is cut at a
    word boundary when it reaches ``max_words``.

    A punctuation mark at the very end of the text so far is not yet decidable (``3.`` may
    become ``3.14``), so the phrase it ends comes out with the next delta or ``flush``.

    Args:
        min_first_words: Words the first phrase needs before a clause boundary may end it.
        max_words: Longest phrase, in words, before a forced cut.
        first_max_words: Longest first phrase before a forced cut at a word boundary (``None``:
            ``max_words``). Small values start the audio sooner at some cost in prosody.
    """

    def __init__(
        self, min_first_words: int = 4, max_words: int = 30, first_max_words: int | None = None
    ) -> None:
        if min_first_words < 1 or max_words < 2 or (first_max_words is not None and first_max_words < 1):
            raise ValueError("min_first_words and first_max_words must be >= 1 and max_words >= 2")
        self.min_first_words = min_first_words
        self.max_words = max_words
        self.first_max_words = first_max_words
        self._buf = ""
        self._first = True

    def push(self, delta: str) -> list[str]:
        """Add the next delta; return the phrases it finished (stripped, non-empty)."""
        self._buf += delta
        phrases: list[str] = []
        while True:
            cut = self._find_cut(self._buf)
            if cut is None:
                return phrases
            phrase, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if phrase:
                phrases.append(phrase)
                self._first = False

    def flush(self) -> str | None:
        """End the response: return what is left (or ``None``) and start over."""
        rest = self._buf.strip()
        self.reset()
        return rest or None

    def reset(self) -> None:
        """Drop buffered text (barge-in) and treat the next text as a new response."""
        self._buf = ""
        self._first = True

    def _find_cut(self, buf: str) -> int | None:
        """Index after which the first finished phrase of ``buf`` ends, or ``None``.

        A word is a whitespace-separated token with a letter or digit in it, so a lone
        dash or emoji does not count towards ``min_first_words``/``max_words``.
        """
        n = len(buf)
        words = 0  # complete words before index i
        in_word = False  # the current token has a letter or digit
        clause: tuple[int, int] | None = None  # (cut index, words before it) of the last clause end
        i = 0
        while i < n:
            c = buf[i]
            if c.isalnum():
                in_word = True
            elif c.isspace():
                if in_word:
                    words += 1
                    in_word = False
                    if self._first and self.first_max_words is not None and words >= self.first_max_words:
                        return i
                    if words >= self.max_words:
                        if clause is not None and clause[1] >= self.max_words // 2:
                            return clause[0]
                        return i
                if c == "\n" and words:
                    return i + 1
            elif c in _END_PUNCT:
                j = i
                while j < n and (buf[j] in _END_PUNCT or buf[j] in _CLOSERS):
                    j += 1
                if j == n:
                    return None  # undecidable until more text arrives: "3." may become "3.14"
                if buf[j].isspace():
                    kind = self._classify(buf, i, j)
                    if kind == "end":
                        return j
                    if kind == "clause":
                        clause = (j, words + in_word)
                        if self._first and clause[1] >= self.min_first_words:
                            return j
                i = j
                continue
            elif c in ",—–" or (c == "-" and buf[i - 1 : i].isspace()):
                if i + 1 == n:
                    return None  # "1," may become "1,000"
                if buf[i + 1].isspace():
                    clause = (i + 1, words + in_word)
                    if self._first and clause[1] >= self.min_first_words:
                        return i + 1
            i += 1
        return None

    @staticmethod
    def _classify(buf: str, i: int, j: int) -> str:
        """Kind of the punctuation run ``buf[i:j]`` (followed by a space): end, clause or none."""
        run = buf[i:j]
        if "…" in run or ".." in run:
            # "Well... I think so." is one sentence; "I see... Paris is big." two.
            return "end" if _next_word_capitalized(buf, j) else "clause"
        if any(ch in run for ch in "!?;:"):
            return "end"
        return "end" if _period_ends_sentence(buf, i, j) else "none"


_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"]+", re.IGNORECASE)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]*", re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*(?:[-*+•◦▪‣]|\d{1,3}[.)])[ \t]+", re.MULTILINE)
_QUOTE_BAR = re.compile(r"^[ \t]*>+[ \t]?", re.MULTILINE)
_RULE = re.compile(r"^[ \t]*([-*_=])\1{2,}[ \t]*$", re.MULTILINE)
_MARKUP = re.compile(r"[*#`~|\\_]+")
_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # emoticons, pictographs, transport, flags, supplemental symbols
    "\u2600-\u27bf"  # misc symbols and dingbats
    "\u2b00-\u2bff"  # arrows and stars
    "\u2300-\u23ff"  # technical symbols (⌚, ⏰)
    "\ufe0e\ufe0f\u200d\u20e3"  # variation selectors, zero-width joiner, keycap
    "\U000e0020-\U000e007f"  # tag characters (subdivision flags)
    "]+"
)
_TRAILING_URL_PUNCT = ".,;:!?)]}'"


def _url_to_word(m: re.Match[str]) -> str:
    url = m.group(0)
    trail = len(url) - len(url.rstrip(_TRAILING_URL_PUNCT))
    return "link" + (url[-trail:] if trail else "")


def clean_for_speech(text: str) -> str:
    """Make text safe to read aloud: no markdown, emoji or raw URLs.

    Markdown links keep their text, URLs become the word "link", headings, bullets,
    emphasis and code marks are removed, and whitespace is collapsed.

    Args:
        text: A phrase as the LLM wrote it.

    Returns:
        The phrase to synthesize; ``""`` when nothing speakable is left (skip TTS then).
    """
    out = _MD_LINK.sub(r"\1", text)
    out = _URL.sub(_url_to_word, out)
    out = _RULE.sub(" ", out)
    out = _HEADING.sub("", out)
    out = _QUOTE_BAR.sub("", out)
    out = _BULLET.sub("", out)
    out = _EMOJI.sub("", out)
    out = _MARKUP.sub(" ", out)
    out = " ".join(out.split())
    # Removing marks can leave "word ." or "( )": tidy the spacing before punctuation.
    out = re.sub(r"\s+([.,;:!?)\]])", r"\1", out)
    out = re.sub(r"\(\s*\)|\[\s*\]", "", out).strip()
    return out if any(ch.isalnum() for ch in out) else ""
