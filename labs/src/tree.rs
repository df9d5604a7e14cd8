//! Which traplab tree a command works on: the repository whose hypervisor and guests it runs
//! (and rebuilds, for `traplab check`), and whose sources it shows. It is found when
//! `traplab` runs, not fixed when it was built, so that the `traplab` of a copied checkout
//! runs the copy's guests and not those of the tree it was built in.
//!
//! A tree is a directory that holds `Cargo.toml` and `labs/catalogue/`. The first one found
//! going up from the current directory wins; then the first one going up from where the
//! `traplab` program is (`target/release/traplab` is inside its tree); only when neither
//! finds one, the tree `traplab` was built in ([`Found::BuildTime`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// How the tree was found: messages say it, so that a surprise can be explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The current directory is in it.
    CurrentDirectory,
    /// The `traplab` program is in it.
    Program,
    /// Neither is: the tree `traplab` was built in.
    BuildTime,
}

/// A traplab tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub root: PathBuf,
    pub found: Found,
}

impl Tree {
    /// Where the bare-metal build puts the hypervisor (`traplab-hv`) and the guests.
    pub fn bare_dir(&self) -> PathBuf {
        crate::bare::output_dir(&crate::bare::target_dir(&self.root))
    }

    /// `/home/me/traplab (the tree of the current directory)`: for messages.
    pub fn describe(&self) -> String {
        let how = match self.found {
            Found::CurrentDirectory => "the traplab tree the current directory is in",
            Found::Program => "the traplab tree this traplab program is in",
            Found::BuildTime => {
                "the tree this traplab was built in: neither the current directory nor the program is in one"
            }
        };
        format!("{} ({how})", self.root.display())
    }
}

/// Does `dir` hold a traplab tree?
pub fn is_tree(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file() && dir.join("labs/catalogue").is_dir()
}

/// The first traplab tree in `start` or a directory above it.
pub fn find_from(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| is_tree(dir))
        .map(Path::to_path_buf)
}

/// The tree of the current directory, else of the program, else the build's.
pub fn locate(current_dir: Option<&Path>, program: Option<&Path>, built_in: &Path) -> Tree {
    if let Some(root) = current_dir.and_then(find_from) {
        return Tree {
            root,
            found: Found::CurrentDirectory,
        };
    }
    if let Some(root) = program.and_then(Path::parent).and_then(find_from) {
        return Tree {
            root,
            found: Found::Program,
        };
    }
    Tree {
        root: built_in.to_path_buf(),
        found: Found::BuildTime,
    }
}

/// The tree this process works on (looked for once).
pub fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let current_dir = std::env::current_dir().ok();
        // The program's real place: a symbolic link in ~/bin still finds its tree.
        let program = std::env::current_exe()
            .ok()
            .map(|path| path.canonicalize().unwrap_or(path));
        locate(
            current_dir.as_deref(),
            program.as_deref(),
            Path::new(env!("TRAPLAB_BUILD_ROOT")),
        )
    })
}

/// The files of `parts` of the tree at `root` (folders or files, relative to it), relative
/// to `root` and sorted, leaving out build output (`target/` folders).
pub fn files(root: &Path, parts: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for part in parts {
        files_under(root, &root.join(part), &mut found);
    }
    found.sort();
    found
}

fn files_under(root: &Path, path: &Path, found: &mut Vec<PathBuf>) {
    if path.is_file() {
        if let Ok(relative) = path.strip_prefix(root) {
            found.push(relative.to_path_buf());
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|name| name == "target") {
            continue;
        }
        files_under(root, &path, found);
    }
}

/// Make `copy` hold the files of `parts` of the tree at `root` (see [`files`]), as the
/// tests that build in a copy of the tree need it: a file whose content differs is
/// rewritten, the others are left alone (their modification times, which cargo looks at,
/// stay put, so an unchanged copy rebuilds nothing), and a file that `root` does not have
/// (a patch added it) is removed.
pub fn mirror(root: &Path, copy: &Path, parts: &[&str]) -> std::io::Result<()> {
    let wanted = files(root, parts);
    for file in &wanted {
        let source = std::fs::read(root.join(file))?;
        let copied = copy.join(file);
        if std::fs::read(&copied).ok().as_deref() != Some(source.as_slice()) {
            if let Some(parent) = copied.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&copied, &source)?;
        }
    }
    for file in files(copy, parts) {
        if !wanted.contains(&file) {
            std::fs::remove_file(copy.join(&file))?;
        }
    }
    Ok(())
}

/// `git apply` the patch `patch` (a solution: `labs/solutions/<lab>/<n>.patch`) to the copy
/// at `copy`, as outside any repository: a copy under `target/` is inside ours, and git
/// would otherwise take the patch's paths relative to our top level.
pub fn apply_patch(patch: &Path, copy: &Path) -> Result<(), String> {
    let ceiling = copy.parent().unwrap_or(copy);
    let output = std::process::Command::new("git")
        .current_dir(copy)
        .env("GIT_CEILING_DIRECTORIES", ceiling)
        .args(["apply", "--whitespace=nowarn"])
        .arg(patch)
        .output()
        .map_err(|error| format!("cannot run git: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{} does not apply: {}",
            patch.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory that looks like a tree, with a folder inside it.
    fn fake_tree(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("traplab-tree-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(root.join("labs/catalogue")).expect("a temporary folder");
        std::fs::create_dir_all(root.join("guests/src")).expect("a temporary folder");
        std::fs::write(root.join("Cargo.toml"), "[workspace]\n").expect("a temporary file");
        root
    }

    #[test]
    fn the_current_directory_wins_then_the_program_then_the_build() {
        let copy = fake_tree("copy");
        let other = fake_tree("other");
        let built_in = Path::new("/where/it/was/built");
        let program = other.join("target/release/traplab");

        let from_inside = locate(Some(&copy.join("guests/src")), Some(&program), built_in);
        assert_eq!(
            from_inside,
            Tree {
                root: copy.clone(),
                found: Found::CurrentDirectory
            }
        );
        assert_eq!(
            from_inside.bare_dir(),
            copy.join("target/bare/x86_64-unknown-linux-gnu/release")
        );

        let outside = std::env::temp_dir();
        let from_program = locate(Some(&outside), Some(&program), built_in);
        assert_eq!(
            (from_program.root.as_path(), from_program.found),
            (other.as_path(), Found::Program)
        );

        let nowhere = locate(
            Some(&outside),
            Some(Path::new("/usr/bin/traplab")),
            built_in,
        );
        assert_eq!(nowhere.found, Found::BuildTime);
        assert_eq!(nowhere.root, built_in);
        assert!(
            nowhere
                .describe()
                .contains("the tree this traplab was built in"),
            "{}",
            nowhere.describe()
        );
        for dir in [copy, other] {
            std::fs::remove_dir_all(dir).expect("removable");
        }
    }

    #[test]
    fn a_mirror_rewrites_only_what_differs_and_drops_what_was_added() {
        let root = fake_tree("mirror-root");
        let copy = root.with_file_name(format!(
            "traplab-tree-test-{}-mirror-copy",
            std::process::id()
        ));
        std::fs::write(root.join("guests/src/a.rs"), "a").expect("writable");
        std::fs::create_dir_all(root.join("guests/target")).expect("writable");
        std::fs::write(root.join("guests/target/built"), "x").expect("writable");
        mirror(&root, &copy, &["Cargo.toml", "guests"]).expect("mirrored");
        assert_eq!(
            files(&copy, &["Cargo.toml", "guests"]),
            [
                PathBuf::from("Cargo.toml"),
                PathBuf::from("guests/src/a.rs")
            ],
            "build output stays behind"
        );
        let untouched = std::fs::metadata(copy.join("Cargo.toml"))
            .and_then(|metadata| metadata.modified())
            .expect("a time");
        std::fs::write(copy.join("guests/src/added.rs"), "b").expect("writable");
        std::fs::write(copy.join("guests/src/a.rs"), "changed").expect("writable");
        mirror(&root, &copy, &["Cargo.toml", "guests"]).expect("mirrored");
        assert!(!copy.join("guests/src/added.rs").exists());
        assert_eq!(
            std::fs::read_to_string(copy.join("guests/src/a.rs")).expect("there"),
            "a"
        );
        assert_eq!(
            std::fs::metadata(copy.join("Cargo.toml"))
                .and_then(|metadata| metadata.modified())
                .expect("a time"),
            untouched
        );
        for dir in [root, copy] {
            std::fs::remove_dir_all(dir).expect("removable");
        }
    }

    #[test]
    fn this_repository_is_a_tree() {
        let labs = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(
            find_from(&labs.join("src")).as_deref(),
            labs.parent(),
            "labs/src is inside the repository"
        );
    }
}
