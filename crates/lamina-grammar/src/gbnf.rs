//! GBNF (llama.cpp's grammar format) translated into llguidance's Lark dialect.
//!
//! GBNF: `name ::= alternatives`, the start rule `root`, string literals with `\n \r \t
//! \\ \" \xHH \uHHHH \UHHHHHHHH` escapes, character classes `[a-z]` / `[^"]`, `.` for any
//! character, grouping, `* + ?` and `{m}`, `{m,}`, `{m,n}`, `{,n}` repeats, `#` comments.
//! Each rule becomes one Lark rule (`root` → `start`, others `r_` + the name in lower case
//! with `-` → `_`); literals become JSON-quoted strings, classes and `.` regexes.

use std::collections::BTreeMap;

/// The Lark text of a GBNF grammar, or what is wrong with it (with its line).
pub fn gbnf_to_lark(src: &str) -> Result<String, String> {
    let mut lex = Lexer { chars: src.chars().collect(), pos: 0, line: 1 };
    let mut rules: Vec<(String, Vec<String>)> = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<usize> = None;
    while let Some(tok) = lex.next()? {
        match tok {
            Tok::Define(name) => {
                let lark = rule_name(&name);
                if let Some(prev) = names.insert(lark.clone(), name.clone()) {
                    return Err(format!("line {}: rule `{name}` is defined twice (or clashes with `{prev}`)", lex.line));
                }
                rules.push((lark, Vec::new()));
                current = Some(rules.len() - 1);
            }
            other => {
                let Some(i) = current else {
                    return Err(format!("line {}: expected a rule definition (`name ::= ...`)", lex.line));
                };
                let body = &mut rules[i].1;
                let text = match other {
                    Tok::Name(n) => rule_name(&n),
                    Tok::Alt => {
                        if body.is_empty() || body.last().is_some_and(|l| l == "|" || l == "(") {
                            body.push("\"\"".into());
                        }
                        "|".into()
                    }
                    Tok::Close if body.last().is_some_and(|l| l == "|" || l == "(") => {
                        body.push("\"\"".into());
                        ")".into()
                    }
                    Tok::Text(t) => t,
                    Tok::Close => ")".into(),
                    Tok::Define(_) => unreachable!(),
                };
                body.push(text);
            }
        }
    }
    if !names.contains_key("start") {
        return Err("the grammar has no `root` rule".into());
    }
    let mut out = String::new();
    for (name, mut body) in rules {
        if body.is_empty() || body.last().is_some_and(|l| l == "|") {
            body.push("\"\"".into());
        }
        out.push_str(&format!("{name}: {}\n", body.join(" ")));
    }
    Ok(out)
}

fn rule_name(gbnf: &str) -> String {
    if gbnf == "root" {
        "start".into()
    } else {
        format!("r_{}", gbnf.to_ascii_lowercase().replace('-', "_"))
    }
}

enum Tok {
    /// `name ::=`
    Define(String),
    Name(String),
    Alt,
    Close,
    /// Lark text as it is (a literal, a regex, `(`, an operator).
    Text(String),
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn err<T>(&self, what: impl std::fmt::Display) -> Result<T, String> {
        Err(format!("line {}: {what}", self.line))
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
            } else if c.is_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    fn next(&mut self) -> Result<Option<Tok>, String> {
        self.skip_space();
        let Some(c) = self.peek() else { return Ok(None) };
        let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        Ok(Some(match c {
            c if name_char(c) => {
                let mut name = String::new();
                while self.peek().is_some_and(name_char) {
                    name.push(self.bump().unwrap_or_default());
                }
                let save = (self.pos, self.line);
                self.skip_space();
                if self.chars[self.pos..].starts_with(&[':', ':', '=']) {
                    self.pos += 3;
                    Tok::Define(name)
                } else {
                    (self.pos, self.line) = save;
                    Tok::Name(name)
                }
            }
            '"' => {
                self.bump();
                let mut s = String::new();
                loop {
                    match self.bump() {
                        None => return self.err("unterminated string"),
                        Some('"') => break,
                        Some('\\') => s.push(self.escape()?),
                        Some(c) => s.push(c),
                    }
                }
                Tok::Text(serde_json::Value::String(s).to_string())
            }
            '[' => {
                self.bump();
                let mut class = String::from("[");
                if self.peek() == Some('^') {
                    self.bump();
                    class.push('^');
                }
                loop {
                    let c = match self.bump() {
                        None => return self.err("unterminated character class"),
                        Some(']') => break,
                        Some('\\') => self.escape()?,
                        Some(c) => c,
                    };
                    if c == '-' && class.len() > 1 && !class.ends_with('^') && self.peek() != Some(']') {
                        class.push('-');
                    } else {
                        class.push_str(&regex_char(c));
                    }
                }
                class.push(']');
                Tok::Text(format!("/{class}/"))
            }
            '.' => {
                self.bump();
                Tok::Text("/(?s:.)/".into())
            }
            '(' => {
                self.bump();
                Tok::Text("(".into())
            }
            ')' => {
                self.bump();
                Tok::Close
            }
            '|' => {
                self.bump();
                Tok::Alt
            }
            '*' | '+' | '?' => {
                self.bump();
                Tok::Text(c.to_string())
            }
            '{' => {
                self.bump();
                let mut rep = String::new();
                loop {
                    match self.bump() {
                        None => return self.err("unterminated repetition `{`"),
                        Some('}') => break,
                        Some(c) if c.is_ascii_digit() || c == ',' => rep.push(c),
                        Some(c) if c.is_whitespace() => {}
                        Some(c) => return self.err(format!("unexpected `{c}` in a repetition")),
                    }
                }
                Tok::Text(format!("{{{rep}}}"))
            }
            c => return self.err(format!("unexpected `{c}`")),
        }))
    }

    /// The character of an escape whose backslash was just read.
    fn escape(&mut self) -> Result<char, String> {
        let hex = |lex: &mut Self, n: usize| -> Result<char, String> {
            let digits: String = (0..n).filter_map(|_| lex.bump()).collect();
            u32::from_str_radix(&digits, 16).ok().and_then(char::from_u32).map_or_else(|| lex.err(format!("bad escape `{digits}`")), Ok)
        };
        match self.bump() {
            Some('n') => Ok('\n'),
            Some('r') => Ok('\r'),
            Some('t') => Ok('\t'),
            Some('x') => hex(self, 2),
            Some('u') => hex(self, 4),
            Some('U') => hex(self, 8),
            Some(c @ ('\\' | '"' | '[' | ']' | '-' | '^')) => Ok(c),
            Some(c) => self.err(format!("unknown escape `\\{c}`")),
            None => self.err("unterminated escape"),
        }
    }
}

/// One character inside a regex character class.
fn regex_char(c: char) -> String {
    match c {
        '\\' | ']' | '[' | '^' | '-' | '/' | '&' | '~' => format!("\\{c}"),
        c if c.is_control() || c.is_whitespace() => format!("\\x{{{:X}}}", c as u32),
        c => c.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_literals_classes_and_repeats_translate() {
        let g = "# a list\nroot ::= \"[\" item (\", \" item){0,3} \"]\"\nitem ::= [a-z0-9_]+ | \"\\\"q\\\"\" | .\n";
        let lark = gbnf_to_lark(g).unwrap();
        assert_eq!(lark, "start: \"[\" r_item ( \", \" r_item ) {0,3} \"]\"\nr_item: /[a-z0-9_]/ + | \"\\\"q\\\"\" | /(?s:.)/\n");
    }

    #[test]
    fn negated_classes_escapes_and_empty_alternatives() {
        let lark = gbnf_to_lark("root ::= [^\"\\n] my-rule\nmy-rule ::= \"\\x41\" |").unwrap();
        assert_eq!(lark, "start: /[^\"\\x{A}]/ r_my_rule\nr_my_rule: \"A\" | \"\"\n");
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        assert!(gbnf_to_lark("item ::= \"a\"").unwrap_err().contains("no `root`"));
        assert_eq!(gbnf_to_lark("root ::= \"a\"\nroot ::= \"b\"").unwrap_err(), "line 2: rule `root` is defined twice (or clashes with `root`)");
        assert!(gbnf_to_lark("root ::= \"a").unwrap_err().contains("unterminated string"));
        assert!(gbnf_to_lark("root ::= \"a\" ; ").unwrap_err().starts_with("line 1: unexpected `;`"));
        assert!(gbnf_to_lark("\"a\"").unwrap_err().contains("expected a rule definition"));
    }
}
