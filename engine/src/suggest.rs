//! "Did you mean …?" for misspelt keys, step ids, actions and names.

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    // Edit distances cost length squared: long words are not typos worth suggesting for.
    const LONGEST: usize = 64;
    if word.len() > LONGEST {
        return None;
    }
    let lower = word.to_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        if c.len() > LONGEST {
            continue;
        }
        if c == word {
            continue;
        }
        let score = strsim::jaro_winkler(&lower, &c.to_lowercase());
        // Prefix matches ("timeo" for "timeout") and short edits both count.
        let edits = strsim::damerau_levenshtein(&lower, &c.to_lowercase());
        let close = score >= 0.84 || edits <= 1 || (edits <= 2 && c.len() > 4);
        if close && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `did you mean `x`?` or nothing.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_and_ignores_strangers() {
        let keys = ["needs", "timeout", "retry", "run_on", "uses", "with"];
        assert_eq!(closest("need", keys), Some("needs"));
        assert_eq!(closest("timout", keys), Some("timeout"));
        assert_eq!(closest("runon", keys), Some("run_on"));
        assert_eq!(closest("wiht", keys), Some("with"));
        assert_eq!(closest("banana", keys), None);
    }
}
