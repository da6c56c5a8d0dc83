// A small Markdown renderer for model replies: paragraphs, headings, emphasis, inline
// code, fenced code blocks, lists, block quotes, rules and http(s) links.
//
// It builds DOM nodes with createElement and text nodes only: text from the model never
// reaches an HTML parser, so `<script>` or `<img onerror>` in a reply shows as text. A
// link keeps its href only when it parses as an absolute http: or https: URL.
//
// `MarkdownView` re-renders as a streamed reply grows: blocks whose source has not
// changed keep their nodes, only the changed tail is rebuilt.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])([ \t]+(.*))?$/;

/** Splits Markdown source into blocks: `{type, src, ...}` with `src` the lines it came from. */
export function parseBlocks(text) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (/^\s*$/.test(line)) {
      i++;
      continue;
    }
    const start = i;
    let m;
    if ((m = FENCE.exec(line))) {
      const mark = m[1];
      const body = [];
      i++;
      let closed = false;
      while (i < lines.length) {
        const close = new RegExp("^ {0,3}" + (mark[0] === "`" ? "`" : "~") + "{" + mark.length + ",}\\s*$");
        if (close.test(lines[i])) {
          closed = true;
          i++;
          break;
        }
        body.push(lines[i]);
        i++;
      }
      blocks.push({ type: "code", lang: m[2], text: body.join("\n"), closed, src: lines.slice(start, i).join("\n") });
    } else if ((m = HEADING.exec(line))) {
      blocks.push({ type: "heading", level: m[1].length, text: m[2] || "", src: line });
      i++;
    } else if (RULE.test(line)) {
      blocks.push({ type: "rule", src: line });
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        body.push(m[1]);
        i++;
      }
      blocks.push({ type: "quote", children: parseBlocks(body.join("\n")), src: lines.slice(start, i).join("\n") });
    } else if ((m = ITEM.exec(line))) {
      const ordered = /\d/.test(m[2]);
      const items = [];
      while (i < lines.length) {
        const im = ITEM.exec(lines[i]);
        if (!im || /\d/.test(im[2]) !== ordered || RULE.test(lines[i])) break;
        const indent = im[1].length + im[2].length + 1;
        const body = [im[4] || ""];
        i++;
        // The item goes on over indented lines, and over blank lines followed by one.
        while (i < lines.length) {
          const l = lines[i];
          if (/^\s*$/.test(l)) {
            const next = lines[i + 1];
            if (next !== undefined && /^\s{2,}\S/.test(next)) {
              body.push("");
              i++;
              continue;
            }
            break;
          }
          if (/^\s{2,}\S/.test(l)) {
            body.push(l.slice(Math.min(indent, l.length - l.trimStart().length)));
            i++;
            continue;
          }
          if (ITEM.exec(l) || FENCE.test(l) || HEADING.test(l) || QUOTE.test(l)) break;
          body.push(l);
          i++;
        }
        items.push({ number: ordered ? parseInt(im[2], 10) : null, children: parseBlocks(body.join("\n")) });
        // One blank line between items keeps the list going.
        if (i + 1 < lines.length && /^\s*$/.test(lines[i]) && ITEM.test(lines[i + 1])) i++;
      }
      blocks.push({ type: "list", ordered, start: items[0].number, items, src: lines.slice(start, i).join("\n") });
    } else {
      const body = [];
      while (i < lines.length) {
        const l = lines[i];
        if (/^\s*$/.test(l) || FENCE.test(l) || HEADING.test(l) || RULE.test(l) || QUOTE.test(l) || ITEM.test(l)) {
          if (body.length > 0) break;
        }
        body.push(l);
        i++;
      }
      blocks.push({ type: "paragraph", text: body.join("\n"), src: body.join("\n") });
    }
  }
  return blocks;
}

/** One block as a DOM node. */
function blockNode(b) {
  switch (b.type) {
    case "code": {
      const pre = el("pre");
      const code = el("code");
      if (b.lang) {
        pre.dataset.lang = b.lang;
        code.className = "language-" + b.lang.replace(/[^\w+#.-]/g, "");
      }
      code.textContent = b.text;
      pre.append(code);
      return pre;
    }
    case "heading": {
      const h = el("h" + b.level);
      h.append(inline(b.text));
      return h;
    }
    case "rule":
      return el("hr");
    case "quote": {
      const q = el("blockquote");
      for (const c of b.children) q.append(blockNode(c));
      return q;
    }
    case "list": {
      const list = el(b.ordered ? "ol" : "ul");
      if (b.ordered && b.start !== 1) list.start = b.start;
      for (const item of b.items) {
        const li = el("li");
        // A leading paragraph is the item's own text (a "tight" item); nested lists
        // and other blocks follow it.
        const [first, ...rest] = item.children;
        if (first && first.type === "paragraph") li.append(inline(first.text));
        else if (first) li.append(blockNode(first));
        for (const c of rest) li.append(blockNode(c));
        list.append(li);
      }
      return list;
    }
    default: {
      const p = el("p");
      p.append(inline(b.text));
      return p;
    }
  }
}

/** Markdown source as a DocumentFragment. */
export function render(text) {
  const frag = document.createDocumentFragment();
  for (const b of parseBlocks(text)) frag.append(blockNode(b));
  return frag;
}

/** Renders into `container` as the text grows, rebuilding only the blocks that changed. */
export class MarkdownView {
  constructor(container) {
    this.container = container;
    this.rendered = []; // [{src, type, node}]
  }

  update(text) {
    const blocks = parseBlocks(text);
    let same = 0;
    while (same < blocks.length && same < this.rendered.length && blocks[same].src === this.rendered[same].src && blocks[same].type === this.rendered[same].type) {
      same++;
    }
    for (const r of this.rendered.splice(same)) r.node.remove();
    for (const b of blocks.slice(same)) {
      const node = blockNode(b);
      this.container.append(node);
      this.rendered.push({ src: b.src, type: b.type, node });
    }
  }
}

/** An absolute http(s) URL, or null. */
export function safeUrl(raw) {
  try {
    const u = new URL(raw);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch {
    return null;
  }
}

function el(tag) {
  return document.createElement(tag);
}

function link(href, children) {
  const a = el("a");
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.append(children);
  return a;
}

const PUNCT = "\\`*_{}[]()#+-.!~<>|\"'";

/** Inline Markdown (one paragraph's or heading's text) as a DocumentFragment. */
export function inline(text) {
  const frag = document.createDocumentFragment();
  let buf = "";
  const flush = () => {
    if (buf) frag.append(document.createTextNode(buf));
    buf = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && PUNCT.includes(text[i + 1])) {
      buf += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "\n") {
      flush();
      frag.append(el("br"));
      i++;
      continue;
    }
    if (c === "`") {
      let n = 1;
      while (text[i + n] === "`") n++;
      const fence = "`".repeat(n);
      const end = findRun(text, fence, i + n);
      if (end >= 0) {
        flush();
        let body = text.slice(i + n, end).replace(/\n/g, " ");
        if (body.length > 2 && body.startsWith(" ") && body.endsWith(" ") && body.trim()) body = body.slice(1, -1);
        const code = el("code");
        code.textContent = body;
        frag.append(code);
        i = end + n;
      } else {
        buf += fence;
        i += n;
      }
      continue;
    }
    if (c === "[") {
      const m = parseLink(text, i);
      if (m) {
        const href = safeUrl(m.url);
        flush();
        if (href) {
          frag.append(link(href, inline(m.label)));
        } else {
          // Not a web address (javascript:, data:, relative): shown as written.
          frag.append(document.createTextNode(text.slice(i, m.end)));
        }
        i = m.end;
        continue;
      }
    }
    if (c === "<") {
      const m = /^<(https?:\/\/[^\s<>]+)>/.exec(text.slice(i));
      const href = m && safeUrl(m[1]);
      if (href) {
        flush();
        frag.append(link(href, document.createTextNode(m[1])));
        i += m[0].length;
        continue;
      }
    }
    if (c === "h" && (i === 0 || /[\s(]/.test(text[i - 1]))) {
      const m = /^https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"*_]/.exec(text.slice(i));
      const href = m && safeUrl(m[0]);
      if (href) {
        flush();
        frag.append(link(href, document.createTextNode(m[0])));
        i += m[0].length;
        continue;
      }
    }
    if (c === "*" || c === "_" || c === "~") {
      const e = parseEmphasis(text, i);
      if (e) {
        flush();
        frag.append(e.node);
        i = e.end;
        continue;
      }
      // An unmatched run is text, whole (so `**` never half-opens later).
      let n = 1;
      while (text[i + n] === c) n++;
      buf += text.slice(i, i + n);
      i += n;
      continue;
    }
    buf += c;
    i++;
  }
  flush();
  return frag;
}

/** The index of `run` at or after `from`, not part of a longer run of backticks. */
function findRun(text, run, from) {
  let j = text.indexOf(run, from);
  while (j >= 0) {
    let k = j + run.length;
    if (text[k] !== "`" && text[j - 1] !== "`") return j;
    while (text[k] === "`") k++;
    j = text.indexOf(run, k);
  }
  return -1;
}

/** `[label](url)` or `[label](url "title")` at `i`: `{label, url, end}` or null. */
function parseLink(text, i) {
  let depth = 0;
  let j = i;
  for (; j < text.length; j++) {
    if (text[j] === "\\") {
      j++;
      continue;
    }
    if (text[j] === "[") depth++;
    else if (text[j] === "]" && --depth === 0) break;
    if (text[j] === "\n" && text[j + 1] === "\n") return null;
  }
  if (j >= text.length || text[j + 1] !== "(") return null;
  const m = /^\(\s*<?([^\s<>()]*)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/.exec(text.slice(j + 1));
  if (!m) return null;
  return { label: text.slice(i + 1, j), url: m[1], end: j + 1 + m[0].length };
}

/** Emphasis at `i` (`*em*`, `_em_`, `**strong**`, `__strong__`, `***both***`, `~~struck~~`). */
function parseEmphasis(text, i) {
  const c = text[i];
  let n = 1;
  while (text[i + n] === c) n++;
  if (c === "~" ? n !== 2 : n > 3) return null;
  const after = text[i + n];
  const before = i > 0 ? text[i - 1] : " ";
  // An opener is followed by a non-space; `_` does not open inside a word.
  if (after === undefined || /\s/.test(after)) return null;
  if (c === "_" && /[\p{L}\p{N}]/u.test(before)) return null;
  const run = c.repeat(n);
  let j = text.indexOf(run, i + n);
  while (j >= 0) {
    const prev = text[j - 1];
    const next = text[j + n];
    const closes = !/\s/.test(prev) && next !== c && (c !== "_" || next === undefined || !/[\p{L}\p{N}]/u.test(next));
    if (closes && j > i + n) break;
    j = text.indexOf(run, j + 1);
  }
  if (j < 0) return null;
  const inner = inline(text.slice(i + n, j));
  let node;
  if (c === "~") {
    node = el("del");
    node.append(inner);
  } else if (n === 3) {
    node = el("strong");
    const em = el("em");
    em.append(inner);
    node.append(em);
  } else {
    node = el(n === 2 ? "strong" : "em");
    node.append(inner);
  }
  return { node, end: j + n };
}
