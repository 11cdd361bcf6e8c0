// Streaming readers for İYS's JSON consent lists: a JSON file holding either a top-level array of consent objects
// or İYS's `{"list":[...], ...}` wrapper (pull answers and push bodies), and NDJSON (one object per line).
//
// The JSON scanner is hand-written on purpose. Files may hold tens of millions of items, so the whole document can
// never be JSON.parse'd; a general streaming JSON parser builds every value token by token in JS and is many times
// slower than V8's native JSON.parse. So the scanner only finds where each top-level item of the list starts and
// ends (tracking string, escape and bracket depth, nothing else) and hands that slice to JSON.parse, one item at a
// time. Knowing the extent of an item without parsing it is also what lets one broken item be reported (H014, with
// the line it starts on) while the rest of the file still imports.
//
// What is recovered from, and what is not:
// - an item that is not valid JSON (a bare word, a trailing comma inside it, a stray quote): H014, continue;
// - a string left open at the end of its line (JSON strings cannot hold a raw newline, so the item is broken): H014,
//   then skip to the next line that starts with `{` (the next item in a one-item-per-line or pretty-printed file)
//   or `]` (the end of the list);
// - a missing comma between two items: the second is refused (H014), an empty item (`,,`): H014, a trailing comma
//   before `]`: tolerated;
// - anything that leaves the list itself unreadable is a FileFormatError with one line saying where: a document
//   that is not an array or an object with a "list" array, a file that ends inside the list (truncated), text after
//   the document, an item longer than MAX_ITEM_CHARS (a bracket is missing, so the item would swallow the file).
// Messages never quote the input (not even the wrapper's keys): items carry recipients, and V8's JSON.parse messages
// echo the text they failed on, so they are not passed on either.

import { StringDecoder } from 'node:string_decoder'
import { readLineBatches } from './csv.js'
import { CodedError } from '../domain/errors.js'

/** The file's structure is broken beyond one item: nothing of it should be imported. */
export class FileFormatError extends CodedError<'FILE_FORMAT'> {
  constructor (message: string) { super('FILE_FORMAT', message) }
}

/** Items of one chunk of the file, as parallel arrays (one object per item would cost tens of millions of them). */
export interface JsonItemBatch {
  /** 1-based line on which each item starts */
  lines: number[]
  /** the parsed item, or undefined where `problems` says why there is none */
  values: unknown[]
  /** null for a readable item, else why it could not be read (never containing the item's text) */
  problems: (string | null)[]
}

/** A consent item is a few hundred characters; even 3,000 retailerAccess codes stay far below this. */
export const MAX_ITEM_CHARS = 1 << 20

// Scanner states.
const TOP = 0 // before the document's value
const OBJ_KEY = 1 // in the top-level object: a key, or '}'
const KEY = 2 // inside a top-level key's string
const OBJ_COLON = 3 // after a key
const OBJ_VALUE = 4 // before a key's value
const OBJ_NEXT = 5 // after a key's value: ',' or '}'
const LIST_ITEM = 6 // in the list: an item, or ']'
const LIST_NEXT = 7 // after an item: ',' or ']'
const VALUE = 8 // inside an item (or a skipped value of the top-level object)
const RESYNC = 9 // after an item broken by an open string: looking for a line that starts with '{' or ']'
const DONE = 10 // after the document: white space only

const isSpace = (c: number): boolean => c === 32 || c === 10 || c === 13 || c === 9

/**
 * Finds the items of a JSON consent list in text fed chunk by chunk. `feed` parses the items that end in the chunk
 * into the current batch; `take` hands the batch over; `end` checks that the document is complete.
 */
export class JsonListScanner {
  private state = TOP
  private line = 1
  /** inside the top-level wrapper object (false: the document is the list itself) */
  private wrapped = false
  private seenList = false
  private missingComma = false
  private key = ''
  private keyEscape = false
  private keyLine = 0
  private items = 0
  // The value being scanned.
  private skip = false
  private bracketed = false
  private depth = 0
  private inString = false
  private escape = false
  private startLine = 0
  /** its text from earlier chunks */
  private carry = ''
  private atLineStart = false
  /** in the current chunk: where the next backslash and newline are (n: none; -1: not searched yet) */
  private nextBackslash = -1
  private nextNewline = -1
  private batch: JsonItemBatch = { lines: [], values: [], problems: [] }

  take (): JsonItemBatch {
    const b = this.batch
    this.batch = { lines: [], values: [], problems: [] }
    return b
  }

  feed (text: string): void {
    const n = text.length
    this.nextBackslash = -1
    this.nextNewline = -1
    let i = 0
    let valueStart = this.state === VALUE ? 0 : -1
    while (i < n) {
      const state = this.state
      if (state === VALUE) {
        const end = this.scanValue(text, i)
        if (end === -1) break // the value goes on in the next chunk
        if (this.state === RESYNC) { // the value was an item broken by an open string
          this.carry = ''
          valueStart = -1
          i = end
          continue
        }
        if (this.skip) this.state = OBJ_NEXT
        else {
          this.addItem(this.startLine, this.carry.length > 0 ? this.carry + text.slice(valueStart, end) : text.slice(valueStart, end), null)
          this.state = LIST_NEXT
        }
        this.carry = ''
        valueStart = -1
        i = end
        continue
      }
      const c = text.charCodeAt(i)
      if (state === KEY) {
        i = this.scanKey(text, i)
        continue
      }
      if (state === RESYNC) {
        if (c === 10) { this.line++; this.atLineStart = true } else if (this.atLineStart && !isSpace(c)) {
          this.atLineStart = false
          if (c === 123 /* { */) { this.state = LIST_ITEM; continue }
          if (c === 93 /* ] */) { this.endList(); i++; continue }
        }
        i++
        continue
      }
      if (isSpace(c) || (c === 0xFEFF && state === TOP)) {
        if (c === 10) this.line++
        i++
        continue
      }
      switch (state) {
        case TOP:
          if (c === 91 /* [ */) { this.state = LIST_ITEM } else if (c === 123 /* { */) { this.wrapped = true; this.state = OBJ_KEY } else {
            throw this.error(this.line, 'a JSON consent file must hold an array of consents or an object with a "list" array of consents')
          }
          i++
          break
        case OBJ_KEY:
          if (c === 34 /* " */) { this.state = KEY; this.key = ''; this.keyEscape = false; this.keyLine = this.line; i++ } else if (c === 125 /* } */) { this.endObject(); i++ } else {
            throw this.error(this.line, 'expected a key in quotes in the top-level object')
          }
          break
        case OBJ_COLON:
          if (c !== 58 /* : */) throw this.error(this.line, 'expected \':\' after a key of the top-level object')
          this.state = OBJ_VALUE
          i++
          break
        case OBJ_VALUE:
          if (this.key === 'list') {
            if (c !== 91 /* [ */) throw this.error(this.line, '"list" must be an array of consents')
            if (this.seenList) throw this.error(this.line, 'the top-level object has more than one "list"')
            this.seenList = true
            this.state = LIST_ITEM
            i++
          } else {
            if (c === 44 || c === 125 || c === 93) throw this.error(this.line, 'a key of the top-level object has no value')
            this.startValue(c, true)
            valueStart = i
          }
          break
        case OBJ_NEXT:
          if (c === 44 /* , */) { this.state = OBJ_KEY } else if (c === 125 /* } */) this.endObject()
          else throw this.error(this.line, 'expected \',\' or \'}\' in the top-level object')
          i++
          break
        case LIST_ITEM:
          if (c === 93 /* ] */) { // `[]`, or a trailing comma: tolerated
            this.endList()
            i++
          } else if (c === 44 /* , */) {
            this.addItem(this.line, null, 'an empty item (two commas in a row)')
            i++
          } else if (c === 125 /* } */) {
            this.missingComma = false
            this.addItem(this.line, null, 'a \'}\' where an item should start')
            this.state = LIST_NEXT
            i++
          } else {
            this.startValue(c, false)
            valueStart = i
          }
          break
        case LIST_NEXT:
          if (c === 44 /* , */) { this.state = LIST_ITEM; i++ } else if (c === 93 /* ] */) { this.endList(); i++ } else {
            // Two items without a comma between them: the second one is refused, then the list goes on.
            this.missingComma = true
            this.state = LIST_ITEM
          }
          break
        case DONE:
          throw this.error(this.line, 'unexpected text after the end of the JSON document')
      }
    }
    if (this.state === VALUE && !this.skip) {
      this.carry += valueStart === -1 ? text : text.slice(valueStart)
      if (this.carry.length > MAX_ITEM_CHARS) {
        throw this.error(this.startLine, `the item starting here is longer than ${MAX_ITEM_CHARS} characters (a closing bracket is missing?)`)
      }
    }
  }

  end (): void {
    switch (this.state) {
      case DONE: return
      case TOP: throw new FileFormatError('the file is empty; expected a JSON array of consents or an object with a "list" array')
      case VALUE:
        if (this.skip) throw this.error(this.startLine, 'a value of the top-level object starting here is not closed at the end of the file (truncated?)')
        throw this.error(this.startLine, 'the item starting here is not closed at the end of the file (truncated?)')
      case LIST_ITEM: case LIST_NEXT: case RESYNC:
        throw this.error(this.line, 'the file ends before the list of consents is closed with \']\' (truncated?)')
      default:
        throw this.error(this.line, 'the file ends inside the top-level object (truncated?)')
    }
  }

  private error (line: number, message: string): FileFormatError {
    return new FileFormatError(`line ${line}: ${message}`)
  }

  private startValue (c: number, skip: boolean): void {
    this.state = VALUE
    this.skip = skip
    this.bracketed = c === 123 || c === 91
    this.depth = 0
    this.inString = false
    this.escape = false
    this.startLine = this.line
    this.carry = ''
  }

  /**
   * Scans the value from `from` on. Returns the index just past its end (a scalar ends before the ',', '}' or ']'
   * that follows it), or -1 when the chunk ends first. An item whose string is still open at the end of a line is
   * refused there and the scanner goes to RESYNC.
   */
  private scanValue (text: string, from: number): number {
    const n = text.length
    let depth = this.depth
    let inString = this.inString
    let escape = this.escape
    let line = this.line
    const bracketed = this.bracketed
    let end = -1
    let i = from
    for (; i < n; i++) {
      if (inString && !escape) {
        // Fast path: jump to the closing quote when no backslash or newline comes before it. The positions of
        // the next backslash and newline are kept per chunk, so each is searched for once per occurrence.
        const q = text.indexOf('"', i)
        if (q !== -1) {
          if (this.nextBackslash < i) { const b = text.indexOf('\\', i); this.nextBackslash = b === -1 ? n : b }
          if (this.nextNewline < i) { const l = text.indexOf('\n', i); this.nextNewline = l === -1 ? n : l }
          if (q < this.nextBackslash && q < this.nextNewline) { i = q; inString = false; continue }
        }
      }
      const c = text.charCodeAt(i)
      if (inString) {
        if (c === 34 /* " */) {
          if (escape) escape = false
          else inString = false
        } else if (c === 92 /* \ */) escape = !escape
        else if (c === 10) {
          line++
          if (this.skip) {
            this.line = line
            throw this.error(line - 1, 'a string in a value of the top-level object is not closed on its line')
          }
          this.line = line
          this.addItem(this.startLine, null, 'a string is not closed on its line')
          this.state = RESYNC
          this.atLineStart = true
          return i + 1
        } else escape = false
        continue
      }
      if (c === 34) inString = true
      else if (c === 123 /* { */ || c === 91 /* [ */) depth++
      else if (c === 125 /* } */ || c === 93 /* ] */) {
        if (depth === 0) { end = i; break } // a scalar, followed by the end of its container
        if (--depth === 0 && bracketed) { end = i + 1; break }
      } else if (c === 44 /* , */) {
        if (depth === 0) { end = i; break }
      } else if (c === 10) line++
    }
    this.line = line
    this.depth = depth
    this.inString = inString
    this.escape = escape
    return end
  }

  private scanKey (text: string, from: number): number {
    const n = text.length
    for (let i = from; i < n; i++) {
      const c = text.charCodeAt(i)
      if (c === 10) throw this.error(this.keyLine, 'a key of the top-level object is not closed on its line')
      if (this.keyEscape) this.keyEscape = false
      else if (c === 92) this.keyEscape = true
      else if (c === 34) {
        this.key += text.slice(from, i)
        try {
          this.key = JSON.parse('"' + this.key + '"') as string
        } catch {
          throw this.error(this.keyLine, 'a key of the top-level object is not a valid JSON string')
        }
        this.state = OBJ_COLON
        return i + 1
      }
    }
    this.key += text.slice(from)
    if (this.key.length > 1000) throw this.error(this.keyLine, 'a key of the top-level object is longer than 1000 characters')
    return n
  }

  private endList (): void {
    this.state = this.wrapped ? OBJ_NEXT : DONE
  }

  private endObject (): void {
    if (!this.seenList) {
      throw this.error(this.line, 'the top-level object has no "list" array of consents (one consent object per line is NDJSON: name the file .ndjson)')
    }
    this.state = DONE
  }

  private addItem (line: number, text: string | null, problem: string | null): void {
    const index = ++this.items
    let value: unknown
    if (this.missingComma) {
      this.missingComma = false
      problem = 'no \',\' between this item and the one before it'
    } else if (text !== null) {
      try {
        value = JSON.parse(text)
      } catch {
        problem = 'not valid JSON'
      }
    }
    const b = this.batch
    b.lines.push(line)
    b.values.push(problem === null ? value : undefined)
    b.problems.push(problem === null ? null : `item ${index} of the list: ${problem}`)
  }
}

async function * decode (input: AsyncIterable<Buffer | string>): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8')
  for await (const chunk of input) yield typeof chunk === 'string' ? chunk : decoder.write(chunk)
  const rest = decoder.end()
  if (rest.length > 0) yield rest
}

/** The items of a JSON consent list (a top-level array, or `{"list":[...]}`), one batch per chunk of input. */
export async function * readJsonListItems (input: AsyncIterable<Buffer | string>): AsyncGenerator<JsonItemBatch> {
  const scanner = new JsonListScanner()
  for await (const text of decode(input)) {
    scanner.feed(text)
    const b = scanner.take()
    if (b.lines.length > 0) yield b
  }
  scanner.end()
}

/** The items of an NDJSON file (one JSON object per line; blank lines are skipped), one batch per chunk of input. */
export async function * readNdjsonItems (input: AsyncIterable<Buffer | string>): AsyncGenerator<JsonItemBatch> {
  let first = true
  // As long as the longest item of a JSON list (a UTF-16 unit is at most 3 UTF-8 bytes); a longer line is skipped.
  const maxLineBytes = 3 * MAX_ITEM_CHARS
  for await (const { lines, numbers, tooLong } of readLineBatches(input, { maxLineBytes })) {
    const batch: JsonItemBatch = { lines: [], values: [], problems: [] }
    for (const n of tooLong) { batch.lines.push(n); batch.values.push(undefined); batch.problems.push(`the line is longer than ${maxLineBytes} bytes`) }
    for (let i = 0; i < lines.length; i++) {
      let s = lines[i]!
      if (first) { first = false; if (s.charCodeAt(0) === 0xFEFF) s = s.slice(1) }
      if (s.trim().length === 0) continue
      batch.lines.push(numbers[i]!)
      try {
        batch.values.push(JSON.parse(s))
        batch.problems.push(null)
      } catch {
        batch.values.push(undefined)
        batch.problems.push('not valid JSON')
      }
    }
    if (batch.lines.length > 0) yield batch
  }
}
