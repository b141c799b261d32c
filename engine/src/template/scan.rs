//! A light scan of template source for what minijinja's own analysis does not report: filters
//! and tests by name (minijinja resolves them only when rendering), and `steps['my-id']` reads
//! (its undeclared-variable analysis stops at brackets).

/// A filter (`x | name`) or a test (`x is name`) used in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// Whether it is a test rather than a filter.
    pub test: bool,
    /// The name.
    pub name: String,
    /// Byte offset of the name in the template.
    pub offset: usize,
}

/// The code parts of a template (inside `{{ }}` and `{% %}`), as byte ranges; the whole string for
/// a bare expression.
fn code_ranges(src: &str, expression: bool) -> Vec<(usize, usize)> {
    if expression {
        return vec![(0, src.len())];
    }
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'{' && (b[i + 1] == b'{' || b[i + 1] == b'%' || b[i + 1] == b'#') {
            let close: &[u8] = match b[i + 1] {
                b'{' => b"}}",
                b'%' => b"%}",
                _ => b"#}",
            };
            let start = i + 2;
            let comment = b[i + 1] == b'#';
            let mut j = start;
            let mut quote: Option<u8> = None;
            // Braces of dict literals inside `{{ }}` do not close the block.
            let mut depth = 0usize;
            let mut closed = false;
            while j + 1 < b.len() {
                if let Some(q) = quote {
                    if b[j] == b'\\' {
                        j += 2;
                        continue;
                    }
                    if b[j] == q {
                        quote = None;
                    }
                } else if !comment && (b[j] == b'\'' || b[j] == b'"') {
                    quote = Some(b[j]);
                } else if !comment && b[j] == b'{' {
                    depth += 1;
                } else if b[j] == close[0]
                    && b[j + 1] == close[1]
                    && (depth == 0 || close[0] != b'}')
                {
                    closed = true;
                    break;
                } else if !comment && b[j] == b'}' {
                    depth = depth.saturating_sub(1);
                }
                j += 1;
            }
            // An unclosed block runs to the end of the text (minijinja reports it).
            let j = if closed { j } else { b.len() };
            let inner = src
                .get(start..j)
                .unwrap_or("")
                .trim()
                .trim_matches('-')
                .trim();
            if b[i + 1] == b'%' && inner == "raw" {
                // `{% raw %}…{% endraw %}` is text, never code.
                match src[j..]
                    .find("endraw")
                    .and_then(|p| src[j + p..].find("%}").map(|q| j + p + q))
                {
                    Some(close) => {
                        i = close + 2;
                        continue;
                    }
                    None => break,
                }
            }
            if !comment {
                out.push((start, j));
            }
            i = j + 2;
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Masks string literals in code with spaces, keeping offsets.
fn without_strings(code: &str) -> Vec<u8> {
    let mut b = code.as_bytes().to_vec();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        match quote {
            Some(_) if b[i] == b'\\' => {
                b[i] = b' ';
                if i + 1 < b.len() {
                    b[i + 1] = b' ';
                }
                i += 1;
            }
            Some(q) if b[i] == q => {
                quote = None;
            }
            Some(_) => b[i] = b' ',
            None if b[i] == b'\'' || b[i] == b'"' => quote = Some(b[i]),
            None => {}
        }
        i += 1;
    }
    b
}

fn ident_at(b: &[u8], mut i: usize) -> Option<(usize, usize)> {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    (i > start && !b[start].is_ascii_digit()).then_some((start, i))
}

/// Every filter and test a template uses, with where.
pub fn filters_and_tests(src: &str, expression: bool) -> Vec<Use> {
    let mut out = Vec::new();
    for (start, end) in code_ranges(src, expression) {
        let b = without_strings(&src[start..end]);
        for i in 0..b.len() {
            if b[i] == b'|' {
                if let Some((s, e)) = ident_at(&b, i + 1) {
                    out.push(Use {
                        test: false,
                        name: String::from_utf8_lossy(&b[s..e]).into(),
                        offset: start + s,
                    });
                }
            } else if b[i..].starts_with(b"is")
                && (i == 0 || !is_ident(b[i - 1]))
                && b.get(i + 2).is_some_and(|c| c.is_ascii_whitespace())
            {
                if let Some((mut s, mut e)) = ident_at(&b, i + 2) {
                    if &b[s..e] == b"not" {
                        match ident_at(&b, e) {
                            Some((s2, e2)) => (s, e) = (s2, e2),
                            None => continue,
                        }
                    }
                    out.push(Use {
                        test: true,
                        name: String::from_utf8_lossy(&b[s..e]).into(),
                        offset: start + s,
                    });
                }
            }
        }
    }
    out
}

/// The most operators and keywords in one `{{ }}` or `{% %}` block (or the bare expression):
/// minijinja's parser recurses once per operator, so a block with thousands of them could
/// exhaust the stack. Counted outside string literals.
pub fn max_operators(src: &str, expression: bool) -> usize {
    code_ranges(src, expression)
        .into_iter()
        .map(|(start, end)| {
            let masked = without_strings(&src[start..end]);
            let symbols = masked
                .iter()
                .filter(|c| b"~+-*/%|.[(!<>=".contains(c))
                .count();
            let words = String::from_utf8_lossy(&masked)
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| matches!(*w, "not" | "and" | "or" | "is" | "in" | "if" | "else"))
                .count();
            symbols + words
        })
        .max()
        .unwrap_or(0)
}

/// Reads written with brackets, `steps['my-id'].outputs.x` or `params["name"]`, as dotted names
/// (`steps.my-id.outputs.x`) with the offset of the read.
pub fn bracket_reads(src: &str, expression: bool) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (start, end) in code_ranges(src, expression) {
        let code = &src[start..end];
        // Roots are searched outside string literals; keys are read from the code itself.
        let masked = without_strings(code);
        let masked = String::from_utf8_lossy(&masked);
        let b = code.as_bytes();
        for root in ["steps", "params", "vars", "secrets"] {
            let mut from = 0;
            while let Some(p) = masked.get(from..).and_then(|m| m.find(root)) {
                let at = from + p;
                from = at + root.len();
                if at > 0 && (is_ident(b[at - 1]) || b[at - 1] == b'.') {
                    continue;
                }
                let mut i = at + root.len();
                let mut name = root.to_string();
                let mut first = true;
                loop {
                    while i < b.len() && b[i] == b' ' {
                        i += 1;
                    }
                    if i < b.len() && b[i] == b'[' {
                        let mut j = i + 1;
                        while j < b.len() && b[j] == b' ' {
                            j += 1;
                        }
                        let Some(&q) = b.get(j).filter(|c| **c == b'\'' || **c == b'"') else {
                            break;
                        };
                        let Some(len) = code[j + 1..].find(q as char) else {
                            break;
                        };
                        let key = &code[j + 1..j + 1 + len];
                        let mut k = j + 1 + len + 1;
                        while k < b.len() && b[k] == b' ' {
                            k += 1;
                        }
                        if b.get(k) != Some(&b']') {
                            break;
                        }
                        name.push('.');
                        name.push_str(key);
                        i = k + 1;
                        first = false;
                    } else if !first && i < b.len() && b[i] == b'.' {
                        let Some((s, e)) = ident_at(b, i + 1) else {
                            break;
                        };
                        name.push('.');
                        name.push_str(&code[s..e]);
                        i = e;
                    } else {
                        break;
                    }
                }
                if !first {
                    out.push((name, start + at));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_filters_and_tests_outside_strings() {
        let uses = filters_and_tests("a {{ x | trim | nosuch(1) }} {% if y is not defined and z is even %}'| fake'{% endif %} {{ '| quoted' }}", false);
        let names: Vec<(bool, &str)> = uses.iter().map(|u| (u.test, u.name.as_str())).collect();
        assert_eq!(
            names,
            vec![
                (false, "trim"),
                (false, "nosuch"),
                (true, "defined"),
                (true, "even")
            ]
        );
        assert_eq!(&"a {{ x | trim"[uses[0].offset..], "trim");
        let uses = filters_and_tests(
            "{% raw %}{{ x | nosuch }}{% endraw %}{{ y | upper }}",
            false,
        );
        assert_eq!(
            uses.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            vec!["upper"]
        );
        let uses = filters_and_tests("x is sameas none or this | length > 0", true);
        let names: Vec<&str> = uses.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, vec!["sameas", "length"]);
    }

    #[test]
    fn finds_bracket_reads() {
        let reads = bracket_reads("{{ steps['my-id'].outputs.x }} {{ steps[\"b\"]['result'] }} {{ mysteps['x'] }} {{ params['p'] }}", false);
        let names: Vec<&str> = reads.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            names,
            vec!["steps.my-id.outputs.x", "steps.b.result", "params.p"]
        );
        assert_eq!(reads[0].1, 3);
    }
}
