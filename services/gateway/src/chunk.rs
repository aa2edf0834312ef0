//! Cutting documents into chunks: windows of tokens (from the embedding
//! model's own tokenizer, so a chunk never exceeds what the model reads) or
//! of characters, with overlap. Both return byte ranges into the text, so a
//! chunk's text is always a verbatim slice of the document.

use std::ops::Range;

/// Windows of `size` tokens, consecutive windows sharing `overlap`.
/// `tokens` are the byte ranges of the document's tokens in order, special
/// tokens excluded. Requires `overlap < size`.
pub fn by_tokens(tokens: &[Range<usize>], size: usize, overlap: usize) -> Vec<Range<usize>> {
    let n = tokens.len();
    let step = size.saturating_sub(overlap).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + size).min(n);
        out.push(tokens[start].start..tokens[end - 1].end);
        if end == n {
            break;
        }
        start += step;
    }
    out
}

/// Windows of at most `size` characters, consecutive windows sharing up to
/// `overlap`. A window ends just before whitespace when there is some in
/// its second half, so words are not cut; leading and trailing whitespace
/// is trimmed and blank windows are dropped. Requires `overlap < size`.
pub fn by_characters(text: &str, size: usize, overlap: usize) -> Vec<Range<usize>> {
    // Byte offset of every char, plus the end.
    let pos: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        // Windows start on a non-blank character: no room spent on blanks.
        while start < n && chars[start].is_whitespace() {
            start += 1;
        }
        if start >= n {
            break;
        }
        let mut end = (start + size).min(n);
        if end < n {
            let half = start + size / 2;
            if let Some(w) = (half.max(start + 1)..end)
                .rev()
                .find(|&i| chars[i].is_whitespace())
            {
                end = w;
            }
        }
        let (mut a, mut b) = (start, end);
        while a < b && chars[a].is_whitespace() {
            a += 1;
        }
        while b > a && chars[b - 1].is_whitespace() {
            b -= 1;
        }
        if a < b {
            out.push(pos[a]..pos[b]);
        }
        if end == n {
            break;
        }
        start = end.saturating_sub(overlap).max(start + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(t: &'a str, r: &[Range<usize>]) -> Vec<&'a str> {
        r.iter().map(|r| &t[r.clone()]).collect()
    }

    #[test]
    fn token_windows_overlap_and_cover_the_text() {
        // Five "tokens" of two bytes each, separated by a space.
        let toks: Vec<Range<usize>> = (0..5).map(|i| i * 3..i * 3 + 2).collect();
        let t = "aa bb cc dd ee";
        assert_eq!(
            texts(t, &by_tokens(&toks, 2, 1)),
            ["aa bb", "bb cc", "cc dd", "dd ee"]
        );
        assert_eq!(texts(t, &by_tokens(&toks, 3, 0)), ["aa bb cc", "dd ee"]);
        assert_eq!(texts(t, &by_tokens(&toks, 10, 2)), [t]);
        assert!(by_tokens(&[], 4, 1).is_empty());
    }

    #[test]
    fn character_windows_end_at_whitespace_and_respect_the_size() {
        let t = "the quick brown fox jumps over the lazy dog";
        let chunks = texts(t, &by_characters(t, 12, 0));
        assert_eq!(
            chunks,
            ["the quick", "brown fox", "jumps over", "the lazy dog"]
        );
        for c in &chunks {
            assert!(c.chars().count() <= 12);
        }
        let overlapping = texts(t, &by_characters(t, 12, 4));
        assert!(overlapping.len() > chunks.len(), "{overlapping:?}");
        // No whitespace at all: hard cuts at the size.
        assert_eq!(
            texts("abcdefgh", &by_characters("abcdefgh", 3, 0)),
            ["abc", "def", "gh"]
        );
    }

    #[test]
    fn character_windows_are_char_safe_and_skip_blank_windows() {
        let t = "ééé ààà    \n\n   ööö";
        let r = by_characters(t, 4, 1);
        for c in texts(t, &r) {
            assert!(!c.trim().is_empty());
            assert!(c.chars().count() <= 4);
        }
        assert!(by_characters("   \n ", 3, 0).is_empty());
    }
}
