// Server-Sent Events read with fetch() (EventSource cannot send the X-API-Key header).
// SSEParser turns decoded text, in chunks of any size, into frames as the HTML standard's
// event-stream rules do: lines end in CRLF, LF or CR; "field: value" lines (one space after
// the colon dropped); lines starting with ":" are comments (keep-alives); a blank line ends
// a frame. Data lines join with "\n". A frame is emitted only once its blank line has come:
// an unfinished last frame is never emitted (the stream was cut in the middle of it).

export class SSEParser {
  constructor() {
    this.buffer = ""; // text after the last complete line
    this.skipLF = false; // the last chunk ended in CR: an LF opening the next one is its pair
    this.started = false;
    this.event = "";
    this.data = [];
    this.lastEventId = ""; // kept across frames, as EventSource does
    this.retry = null; // the server's "retry:" in ms, when it sent one
  }

  // Feed decoded text; returns the frames it completed: [{event, data, id}].
  push(chunk) {
    let text = String(chunk);
    if (!this.started && text) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLF && text) {
      if (text[0] === "\n") text = text.slice(1);
      this.skipLF = false;
    }
    const frames = [];
    let buf = this.buffer + text;
    let start = 0;
    const eol = /\r\n|\r|\n/g;
    let m;
    while ((m = eol.exec(buf)) !== null) {
      // A CR at the very end may be half of a CRLF split across chunks: end the line now
      // and drop the LF if it opens the next chunk.
      if (m[0] === "\r" && m.index === buf.length - 1) this.skipLF = true;
      const frame = this.line(buf.slice(start, m.index));
      if (frame) frames.push(frame);
      start = eol.lastIndex;
    }
    buf = buf.slice(start);
    this.buffer = buf;
    return frames;
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return null; // a comment: keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry") {
      if (/^\d+$/.test(value)) this.retry = Number(value);
    }
    return null; // unknown fields are ignored
  }

  dispatch() {
    const event = this.event || "message";
    const hasData = this.data.length > 0;
    const data = this.data.join("\n");
    this.event = "";
    this.data = [];
    if (!hasData) return null; // as EventSource: a frame without data is not an event
    return { event, data, id: this.lastEventId };
  }
}

// All the frames in `text` (a whole stream or a piece of one; an unfinished last frame is
// left out).
export function* parseSSE(text) {
  yield* new SSEParser().push(text);
}

// The frames of a fetch() Response body as they arrive. Stopping the iteration (break,
// return, a throw) cancels the body, which closes the connection.
export async function* readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder(); // streaming: a UTF-8 sequence may span chunks
  const parser = new SSEParser();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        yield* parser.push(decoder.decode());
        return;
      }
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
  } finally {
    if (!finished) reader.cancel().catch(() => {});
  }
}
