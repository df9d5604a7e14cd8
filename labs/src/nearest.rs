//! What a student nearly typed, or a trace nearly showed: the closest names to a misspelled
//! one ("did you mean page-fault?"), and how alike two texts are (the grader's nearest
//! miss: `REP OUTS 27 element(s)` when 28 were expected).
//!
//! Both count edits with `strsim` (already in the build, for clap's own suggestions): the
//! Damerau–Levenshtein distance, where swapping two neighbouring letters is one edit.

/// The `candidates` nearest to `wanted`, closest first (ties in the candidates' order), when
/// they are near enough to be a typo of it: at most a third of its letters wrong, and at
/// least one edit allowed. Empty when nothing is that near.
pub fn names<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let allowed = (wanted.chars().count() / 3).max(1);
    let mut near: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(wanted, candidate), candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .collect();
    near.sort_by_key(|(distance, _)| *distance);
    let Some(&(closest, _)) = near.first() else {
        return Vec::new();
    };
    // The closest ones only (a typo has one likely meaning), and not a long list.
    near.into_iter()
        .take_while(|(distance, _)| *distance == closest)
        .take(3)
        .map(|(_, name)| name)
        .collect()
}

/// "did you mean page-fault?" (or "page-fault or page-fault-kinds"), or `None` when no
/// candidate is near.
pub fn did_you_mean<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    match names(wanted, candidates).as_slice() {
        [] => None,
        [one] => Some(format!("did you mean {one}?")),
        [first @ .., last] => Some(format!("did you mean {} or {last}?", first.join(", "))),
    }
}

/// How alike `actual` is to `expected`, 0.0 (nothing alike) to 1.0 (the same), with the
/// catalogue's text patterns: `contains:TEXT` scores the closest stretch of `actual`,
/// `prefix:TEXT` its start.
pub fn similarity(expected: &str, actual: &str) -> f64 {
    if let Some(part) = expected.strip_prefix("contains:") {
        let length = part.chars().count();
        let characters: Vec<char> = actual.chars().collect();
        if characters.len() <= length {
            return strsim::normalized_damerau_levenshtein(part, actual);
        }
        return characters
            .windows(length)
            .map(|window| {
                strsim::normalized_damerau_levenshtein(part, &window.iter().collect::<String>())
            })
            .fold(0.0, f64::max);
    }
    if let Some(start) = expected.strip_prefix("prefix:") {
        let head: String = actual.chars().take(start.chars().count()).collect();
        return strsim::normalized_damerau_levenshtein(start, &head);
    }
    strsim::normalized_damerau_levenshtein(expected, actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABS: [&str; 5] = [
        "hello",
        "page-fault",
        "page-fault-kinds",
        "pt-write",
        "cr-write",
    ];

    #[test]
    fn a_typo_finds_the_lab_and_nonsense_finds_nothing() {
        assert_eq!(names("page-falt", LABS), ["page-fault"]);
        assert_eq!(names("helo", LABS), ["hello"]);
        assert_eq!(
            names("pgae-fault", LABS),
            ["page-fault"],
            "a swap is one edit"
        );
        assert_eq!(names("cr-writ", LABS), ["cr-write"]);
        assert!(names("quantum-tunnelling", LABS).is_empty());
        assert_eq!(did_you_mean("xyz", LABS), None);
        assert_eq!(
            did_you_mean("page-falt", LABS).as_deref(),
            Some("did you mean page-fault?")
        );
        assert_eq!(
            did_you_mean("x-write", LABS).as_deref(),
            Some("did you mean pt-write or cr-write?")
        );
    }

    #[test]
    fn the_nearest_text_scores_highest() {
        let expected = "REP OUTS 28 element(s) of 1 byte(s) to port 0x3f8 (console UART)";
        let near = "REP OUTS 27 element(s) of 1 byte(s) to port 0x3f8 (console UART)";
        let far = "OUT 'H' to the console UART";
        assert!(similarity(expected, near) > 0.95);
        assert!(similarity(expected, near) > similarity(expected, far));
        let wanted = "contains:5 invalid writes refused with #GP";
        assert!(
            similarity(wanted, "cr-write: 4 invalid writes refused with #GP")
                > similarity(wanted, "CR4 with FSGSBASE (bit 16)")
        );
        assert_eq!(similarity("contains:ab", "xxabxx"), 1.0);
        assert_eq!(similarity("prefix:0f0b", "0f0b90"), 1.0);
    }
}
