//! The book (`book/`) holds together: every relative link and `{{#include}}` in
//! `book/src` points at something that exists, every lab has its chapter in SUMMARY.md, and
//! every chapter includes its generated parts. (No QEMU: the generated parts themselves are
//! written by `traplab book-traces`, which CI runs before `mdbook build`.)

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// The anchors `traplab_labs::book` writes into `book/src/generated/<lab>.md`.
const ANCHORS: [&str; 7] = [
    "facts",
    "summary",
    "flow",
    "excerpt",
    "questions",
    "exercises",
    "start",
];
/// The parts every lab chapter must include.
const CHAPTER_PARTS: [&str; 4] = ["facts", "flow", "questions", "exercises"];

fn book_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src")
}

/// The hand-written pages: every `.md` under `book/src` except the generated ones.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && path.file_name().is_some_and(|name| name != "generated") {
                walk(&path, found);
            } else if path.extension().is_some_and(|extension| extension == "md") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&book_source(), &mut found);
    found.sort();
    found
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The text outside fenced code blocks, line by line with their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push((number + 1, line));
        }
    }
    lines
}

/// The targets of `[text](target)` links in a line, leaving out inline code.
fn link_targets(line: &str) -> Vec<String> {
    let mut without_code = String::new();
    for (index, part) in line.split('`').enumerate() {
        if index % 2 == 0 {
            without_code.push_str(part);
        }
    }
    let mut targets = Vec::new();
    let mut rest = without_code.as_str();
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    targets
}

/// One `{{#include PATH}}` or `{{#include PATH:ANCHOR}}`.
struct Include {
    path: String,
    anchor: Option<String>,
    /// Written `\{{#include …}}`: mdBook leaves it as text. The book uses that for a
    /// placeholder, a recorded part of a lab that is still to come.
    escaped: bool,
}

/// The includes in a line.
fn includes(line: &str) -> Vec<Include> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{#include ") {
        let escaped = rest[..start].ends_with('\\');
        let after = &rest[start + "{{#include ".len()..];
        let Some(end) = after.find("}}") else { break };
        let target = after[..end].trim();
        let (path, anchor) = match target.split_once(':') {
            Some((path, anchor)) => (path.to_string(), Some(anchor.to_string())),
            None => (target.to_string(), None),
        };
        found.push(Include {
            path,
            anchor,
            escaped,
        });
        rest = &after[end..];
    }
    found
}

/// The ids mdBook gives a page's headings: lower case, spaces to dashes, other punctuation
/// dropped.
fn heading_ids(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .into_iter()
        .filter_map(|(_, line)| {
            line.strip_prefix('#')
                .map(|heading| heading.trim_start_matches('#').trim())
        })
        .map(|heading| {
            heading
                .chars()
                .filter_map(|character| match character {
                    ' ' => Some('-'),
                    character
                        if character.is_alphanumeric() || character == '-' || character == '_' =>
                    {
                        Some(character.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[test]
fn every_relative_link_and_include_in_the_book_points_at_something() {
    let source = book_source();
    let labs: Vec<String> = traplab_labs::all()
        .expect("the catalogue parses")
        .into_iter()
        .map(|lab| lab.id)
        .collect();
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page)
            .unwrap_or_else(|error| panic!("{}: {error}", page.display()));
        let dir = page.parent().expect("a page is in a folder");
        let name = page
            .strip_prefix(&source)
            .unwrap_or(&page)
            .display()
            .to_string();
        for (number, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, fragment) = match target.split_once('#') {
                    Some((file, fragment)) => (file, Some(fragment)),
                    None => (target.as_str(), None),
                };
                let linked = if file.is_empty() {
                    page.clone()
                } else {
                    normalise(&dir.join(file))
                };
                if !linked.is_file() {
                    broken.push(format!("{name}:{number}: link to {target}: no such file"));
                    continue;
                }
                if let Some(fragment) = fragment
                    && linked
                        .extension()
                        .is_some_and(|extension| extension == "md")
                {
                    let linked_text = std::fs::read_to_string(&linked).unwrap_or_default();
                    if !heading_ids(&linked_text).contains(fragment) {
                        broken.push(format!(
                            "{name}:{number}: link to {target}: no heading #{fragment} there"
                        ));
                    }
                }
            }
            for Include {
                path,
                anchor,
                escaped,
            } in includes(line)
            {
                let included = normalise(&dir.join(&path));
                if escaped {
                    // A placeholder for a lab still to come: once the lab is in the
                    // catalogue, it must be filled in (the backslash removed).
                    let generated = included
                        .strip_prefix(normalise(&source.join("generated")))
                        .map(|file| file.display().to_string());
                    let lab = generated
                        .as_deref()
                        .ok()
                        .and_then(|file| file.strip_suffix(".md"));
                    match lab {
                        Some(lab) if labs.iter().any(|id| id == lab) => broken.push(format!(
                            "{name}:{number}: the placeholder for {path} can be filled in now that lab {lab} exists: remove the backslash"
                        )),
                        Some(_) => {}
                        None => broken.push(format!(
                            "{name}:{number}: an escaped include of {path}: only a generated part of a lab to come may be a placeholder"
                        )),
                    }
                    continue;
                }
                if let Ok(generated) = included.strip_prefix(normalise(&source.join("generated"))) {
                    // Written by `traplab book-traces` before `mdbook build`: check what it will write.
                    let file = generated.display().to_string();
                    let lab = file.strip_suffix(".md").unwrap_or(&file);
                    let known_file = file == "cli.md" || labs.iter().any(|id| id == lab);
                    let known_anchor = anchor
                        .as_deref()
                        .is_none_or(|anchor| ANCHORS.contains(&anchor));
                    if !known_file || !known_anchor || (file == "cli.md") != anchor.is_none() {
                        broken.push(format!("{name}:{number}: include of {path}{}: `traplab book-traces` writes no such part", anchor.map(|anchor| format!(":{anchor}")).unwrap_or_default()));
                    }
                } else if !included.is_file() {
                    broken.push(format!("{name}:{number}: include of {path}: no such file"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links in the book:\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_lab_has_a_chapter_in_the_summary_that_includes_its_recorded_parts() {
    let source = book_source();
    let summary = std::fs::read_to_string(source.join("SUMMARY.md")).expect("book/src/SUMMARY.md");
    let listed: BTreeSet<String> = summary.lines().flat_map(link_targets).collect();
    for lab in traplab_labs::all().expect("the catalogue parses") {
        let chapter = format!("labs/{}.md", lab.id);
        assert!(
            listed.contains(&chapter),
            "SUMMARY.md does not list {chapter}: a new lab brings its chapter"
        );
        let text = std::fs::read_to_string(source.join(&chapter))
            .unwrap_or_else(|error| panic!("{chapter}: {error}"));
        for part in CHAPTER_PARTS {
            let include = format!("{{{{#include ../generated/{}.md:{part}}}}}", lab.id);
            assert!(
                text.contains(&include),
                "{chapter} does not include its `{part}` part: {include}"
            );
        }
    }
    // And no page is left out of the table of contents.
    for page in pages() {
        let relative = page
            .strip_prefix(&source)
            .expect("under book/src")
            .display()
            .to_string();
        if relative != "SUMMARY.md" {
            assert!(
                listed.contains(&relative),
                "SUMMARY.md does not list {relative}"
            );
        }
    }
}
