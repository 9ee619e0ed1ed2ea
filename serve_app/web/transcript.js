// The transcript of one captions session, without the page: the final results of
// Speechmatics' AddTranscript messages grouped into lines (a line ends at EndOfUtterance)
// of speaker runs (consecutive words of one speaker), and the plain-text and JSON downloads.

/** Seconds as m:ss.s (h:mm:ss.s past an hour). */
export function formatTime(seconds) {
  const tenths = Math.max(0, Math.round(seconds * 10));
  const s = (tenths % 600) / 10;
  const minutes = Math.floor(tenths / 600);
  const secondsText = s.toFixed(1).padStart(4, "0");
  if (minutes < 60) return `${minutes}:${secondsText}`;
  return `${Math.floor(minutes / 60)}:${String(minutes % 60).padStart(2, "0")}:${secondsText}`;
}

/** A result's word or mark (its first alternative). */
export function contentOf(result) {
  return (result.alternatives && result.alternatives[0] && result.alternatives[0].content) || "";
}

/** A result's speaker label: "S1", "S2", …, or "UU" when the server did not say. */
export function speakerOf(result) {
  return (result.alternatives && result.alternatives[0] && result.alternatives[0].speaker) || "UU";
}

/** Whether a result is written against the word before it, without a delimiter. */
function attachesToPrevious(result) {
  if (result.attaches_to) return result.attaches_to === "previous" || result.attaches_to === "both";
  return result.type === "punctuation";
}

/** The text of results, joined with the language's word delimiter except before punctuation. */
export function joinResults(results, delimiter = " ") {
  let text = "";
  for (const result of results) {
    const content = contentOf(result);
    if (!content) continue;
    text += text && !attachesToPrevious(result) ? delimiter + content : content;
  }
  return text;
}

export class Transcript {
  constructor(language) {
    this.language = language;
    this.delimiter = " ";
    this.results = []; // every final result, in order
    this.lines = [[]]; // each line: runs of {speaker, start, end, results}
  }

  get currentLine() {
    return this.lines[this.lines.length - 1];
  }

  /** Speaker labels in order of first appearance. */
  get speakers() {
    const seen = new Set();
    for (const result of this.results) if (result.type !== "punctuation") seen.add(speakerOf(result));
    return [...seen];
  }

  get wordCount() {
    return this.results.filter((result) => result.type !== "punctuation").length;
  }

  /** Add the results of one AddTranscript to the current line. */
  addFinal(results) {
    for (const result of results) {
      this.results.push(result);
      const line = this.currentLine;
      const last = line[line.length - 1];
      // Punctuation belongs to the run it follows, whoever the server says spoke it.
      const joins = last && (attachesToPrevious(result) || speakerOf(result) === last.speaker);
      if (joins) {
        last.results.push(result);
        last.end = Math.max(last.end, result.end_time ?? last.end);
      } else {
        line.push({
          speaker: speakerOf(result),
          start: result.start_time ?? 0,
          end: result.end_time ?? result.start_time ?? 0,
          results: [result],
        });
      }
    }
  }

  /** EndOfUtterance: the next words start a new line (nothing happens on an empty line). */
  endUtterance() {
    if (this.currentLine.length) this.lines.push([]);
  }

  /** One segment per speaker run: {speaker, start_time, end_time, text}. */
  segments() {
    return this.lines.flat().map((run) => ({
      speaker: run.speaker,
      start_time: run.start,
      end_time: run.end,
      text: joinResults(run.results, this.delimiter),
    }));
  }

  /** The plain-text download: a heading, then "[start – end] S1: words" per speaker run. */
  toText() {
    const speakers = this.speakers.filter((speaker) => speaker !== "UU");
    const heading = `Transcript (language ${this.language}; ${speakers.length} speaker${speakers.length === 1 ? "" : "s"}: ${speakers.join(", ") || "none identified"})`;
    const rows = this.segments().map(
      (segment) => `[${formatTime(segment.start_time)} – ${formatTime(segment.end_time)}] ${segment.speaker}: ${segment.text}`,
    );
    return [heading, "", ...rows, ""].join("\n");
  }

  /** The JSON download: the segments and every final result as the server sent it. */
  toJSON() {
    return { language: this.language, speakers: this.speakers, segments: this.segments(), results: this.results };
  }
}
