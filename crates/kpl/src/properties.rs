//! Java `.properties` syntax, as `java.util.Properties.load` reads it: logical lines joined by a
//! trailing backslash, `#` and `!` comments, `=`, `:` or whitespace between key and value, and
//! backslash escapes (`\t`, `\n`, `\r`, `\f`, `\uXXXX`, and any other character as itself).

/// The entries of `text`, each with the 1-based line where it starts. Linear in the text's
/// length, as Java's `LineReader` is.
pub(crate) fn parse(text: &str) -> Vec<(usize, String, String)> {
    let mut entries = Vec::new();
    let mut lines = physical_lines(text).enumerate();
    while let Some((index, first)) = lines.next() {
        let first = first.trim_start();
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = String::with_capacity(first.len());
        let mut line = first;
        // A physical line ending in an odd number of backslashes continues on the next one
        // (only that line's own backslashes count).
        loop {
            if !ends_with_odd_backslashes(line) {
                logical.push_str(line);
                break;
            }
            logical.push_str(&line[..line.len() - 1]);
            match lines.next() {
                Some((_, next)) => line = next.trim_start(),
                None => break,
            }
        }
        let (key, value) = split_entry(&logical);
        entries.push((index + 1, unescape(key), unescape(value)));
    }
    entries
}

/// Lines as Java reads them: ended by `\n`, `\r` or `\r\n`.
fn physical_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\n', '\r']) {
            Some(at) => {
                let after = if current[at..].starts_with("\r\n") {
                    at + 2
                } else {
                    at + 1
                };
                rest = (after < current.len()).then(|| &current[after..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                (!current.is_empty()).then_some(current)
            }
        }
    })
}

fn ends_with_odd_backslashes(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

fn split_entry(line: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut key_end = line.len();
    for (at, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' | '\u{c}' => {
                key_end = at;
                break;
            }
            _ => {}
        }
    }
    let key = &line[..key_end];
    let mut rest = line[key_end..].trim_start_matches([' ', '\t', '\u{c}']);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = after.trim_start_matches([' ', '\t', '\u{c}']);
    }
    (key, rest)
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match utf16_unit(&hex) {
                    Some(high @ 0xD800..=0xDBFF) => {
                        // A surrogate pair spelled as two escapes is one character, as in Java.
                        let mut lookahead = chars.clone();
                        let low = match (lookahead.next(), lookahead.next()) {
                            (Some('\\'), Some('u')) => {
                                let hex: String = lookahead.by_ref().take(4).collect();
                                utf16_unit(&hex).filter(|low| (0xDC00..=0xDFFF).contains(low))
                            }
                            _ => None,
                        };
                        match low.and_then(|low| char::decode_utf16([high, low]).next()) {
                            Some(Ok(decoded)) => {
                                out.push(decoded);
                                chars = lookahead;
                            }
                            _ => out.push(char::REPLACEMENT_CHARACTER),
                        }
                    }
                    Some(unit) => match char::from_u32(u32::from(unit)) {
                        Some(decoded) => out.push(decoded),
                        None => out.push(char::REPLACEMENT_CHARACTER),
                    },
                    None => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Exactly four hexadecimal digits (Java accepts nothing else, not even a sign).
fn utf16_unit(hex: &str) -> Option<u16> {
    if hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        u16::from_str_radix(hex, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(String, String)> {
        parse(text).into_iter().map(|(_, k, v)| (k, v)).collect()
    }

    #[test]
    fn java_separators_comments_and_continuations() {
        let text = "# comment\n! also a comment\n\n  A = 1\nB:2\nC 3\nD=\nE = spaced value  \n\
                    F = one \\\n    two\nG\\ H = x\nI = \\u0041\\tZ\n";
        assert_eq!(
            entries(text),
            [
                ("A", "1"),
                ("B", "2"),
                ("C", "3"),
                ("D", ""),
                ("E", "spaced value  "),
                ("F", "one two"),
                ("G H", "x"),
                ("I", "A\tZ"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn java_line_ends_escapes_and_continuation_parity() {
        // Lone carriage returns end lines too.
        assert_eq!(
            entries("A=1\rB=2\r\nC=3"),
            [("A", "1"), ("B", "2"), ("C", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // Only the physical line's own backslashes decide a continuation: "x\\\\" is an
        // escaped backslash, so the entry ends there.
        assert_eq!(
            entries("A = x\\\\\nB = y\\\n  z\n"),
            [("A", "x\\"), ("B", "yz")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // A sign is not a hex digit; a surrogate pair is one character.
        assert_eq!(entries("A=\\u+041")[0].1, "\\u+041");
        assert_eq!(entries("A=\\uD83D\\uDE00!")[0].1, "😀!");
        assert_eq!(entries("A=\\uD83Dx")[0].1, "\u{FFFD}x");
    }

    #[test]
    fn many_continued_backslash_lines_parse() {
        // After the first line, each physical line holds three backslashes: an escaped one and
        // a continuation. (Re-scanning the whole logical line for each would be quadratic.)
        let text = "A = x\\\n".to_owned() + &"\\\\\\\n".repeat(50_000) + "end\n";
        let parsed = parse(&text);
        assert_eq!(parsed.len(), 1);
        let expected = "x".to_owned() + &"\\".repeat(50_000) + "end";
        assert!(parsed[0].2 == expected, "the value is the joined lines");
    }

    #[test]
    fn line_numbers_point_at_the_entry() {
        let lines: Vec<usize> = parse("# c\nA=1\n\nB=2\n")
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(lines, [2, 4]);
    }
}
