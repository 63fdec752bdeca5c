//! Java `.properties` syntax, as `java.util.Properties.load` reads it: logical lines joined by a
//! trailing backslash, `#` and `!` comments, `=`, `:` or whitespace between key and value, and
//! backslash escapes (`\t`, `\n`, `\r`, `\f`, `\uXXXX`, and any other character as itself).

/// The entries of `text`, each with the 1-based line where it starts.
pub(crate) fn parse(text: &str) -> Vec<(usize, String, String)> {
    let mut entries = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, first)) = lines.next() {
        let mut logical = first.trim_start().to_owned();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        // A line ending in an odd number of backslashes continues on the next one.
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_entry(&logical);
        entries.push((index + 1, unescape(key), unescape(value)));
    }
    entries
}

fn ends_with_odd_backslashes(line: &str) -> bool {
    line.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
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
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) => out.push(decoded),
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
    fn line_numbers_point_at_the_entry() {
        let lines: Vec<usize> = parse("# c\nA=1\n\nB=2\n")
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(lines, [2, 4]);
    }
}
