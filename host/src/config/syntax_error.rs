//! A TOML error as a [`Problem`]: the line, the column and what is wrong,
//! never the content of the line. toml's own `Display` quotes the offending
//! line, and that line may hold a password or a bearer token; the message
//! shows up in `/status` (unauthenticated) and in the logs.

use super::Problem;

pub(super) fn problem(error: &toml::de::Error, text: &str) -> Problem {
    let message = redact(error.message().trim_end());
    let message = match error.span() {
        Some(span) => {
            let (line, column) = line_and_column(text, span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    };
    Problem { field: String::new(), message }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |start| start.chars().count()) + 1;
    (line, column)
}

/// serde quotes the values it could not use (`invalid type: string "…"`,
/// `unknown variant `…``): keep the shape of the message, drop the values.
/// Backticked names in other messages are keys and stay.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote = None;
    let mut variant = message.starts_with("unknown variant");
    for c in message.chars() {
        match quote {
            Some(open) if c == open => {
                quote = None;
                out.push('…');
                out.push(c);
            }
            Some(_) => {}
            None if c == '"' || c == '\'' || (c == '`' && variant) => {
                variant = false;
                quote = Some(c);
                out.push(c);
            }
            None => out.push(c),
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(text: &str) -> String {
        let error = toml::from_str::<toml::Table>(text).unwrap_err();
        problem(&error, text).message
    }

    #[test]
    fn names_the_line_but_not_its_content() {
        let message = parse_error("a = 1\ntoken = \"Bearer abc.def\n");
        assert!(message.starts_with("line 2, column "), "{message}");
        assert!(!message.contains("abc.def"), "{message}");
    }

    #[test]
    fn values_in_serde_messages_are_dropped() {
        assert_eq!(
            redact("invalid type: string \"Bearer x\", expected usize"),
            "invalid type: string \"…\", expected usize"
        );
        assert_eq!(redact("unknown variant `s3cret`, expected `a` or `b`"), "unknown variant `…`, expected `a` or `b`");
        assert_eq!(redact("unknown field `password`, expected `bind`"), "unknown field `password`, expected `bind`");
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_and_column("é = 1\nxy", 7), (2, 1));
        assert_eq!(line_and_column("ab", 1), (1, 2));
    }
}
