//! Text a guest hands the host (log messages, printed lines, failure and
//! rejection reasons, configuration errors) on its way into the server's
//! log, error messages, status answers and dead-letter headers.
//!
//! Such text is untrusted like any guest output: it is cut to a bounded
//! length (at a character boundary) and its control characters, newlines
//! and terminal escapes included, are written as escapes (`\n`, `\u{1b}`),
//! so a guest can neither forge lines in the server's log nor send escape
//! sequences to an operator's terminal.

/// Longest guest text kept, in bytes, for reasons and messages.
pub const MAX_GUEST_TEXT: usize = 4096;

/// `text` cut to `max` bytes with its control characters escaped; a cut
/// is marked with `…`.
pub fn clean(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &text[..end];
    let mut out = String::with_capacity(kept.len() + 8);
    for c in kept.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if end < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines_or_escapes() {
        let forged = "ok\n2026-12-03T00:00:00Z  INFO weir: admin token is x\x1b[2J\r";
        let cleaned = clean(forged, MAX_GUEST_TEXT);
        assert!(!cleaned.chars().any(char::is_control), "{cleaned:?}");
        assert!(cleaned.contains("\\n2026") && cleaned.contains("\\u{1b}[2J\\r"));
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(10);
        assert_eq!(clean(&text, 5), "éé…");
        assert_eq!(clean("short", 100), "short");
    }
}
