//! `sharq plugin new`: scaffolds a dispatch-strategy project in Rust, C, Python or JavaScript.
//!
//! The templates are embedded in the binary, so the command works from anywhere. Every template
//! implements the same strategy (route by the PUBLISH user property `tenant` with rendezvous
//! hashing, round robin for untagged messages) so that one description fits all four, and
//! builds with one command into a component that `sharq plugin check` accepts.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The sharq checkout this binary was built from. The C, Python and JavaScript build scripts
/// take their pinned toolchains from it (`examples/strategies/tools.sh`), the Rust template
/// its SDK (`plugins/sdk`); both can be pointed elsewhere (`SHARQ_REPO`, the Cargo.toml).
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The contract every template implements, written into the project as
/// `wit/sharq-dispatch.wit`: the project owns a copy, so it builds without the checkout's WIT.
const WIT: &str = include_str!("../../wit/0.2.0/sharq-dispatch.wit");

/// The language of a new project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
    Python,
    Js,
}

impl Lang {
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::C, Lang::Python, Lang::Js];

    /// Whether the component imports WASI (an interpreter inside): it then needs `wasi = true`
    /// in the config and `--wasi` for `sharq plugin check`.
    pub fn needs_wasi(self) -> bool {
        matches!(self, Lang::Python | Lang::Js)
    }

    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::C => "C",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("invalid project name `{name}`: {why}")]
    BadName { name: String, why: String },
    #[error("{} already exists; choose another name or remove it", .0.display())]
    Exists(PathBuf),
    #[error("cannot create {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// A file of a project: its path inside the project, its template, whether it is a script.
struct Template {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: false,
    }
}

const fn script(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: true,
    }
}

const README: &str = include_str!("templates/common/README.md");
const SCENARIO: &str = include_str!("templates/common/scenario.toml");
const GITIGNORE: &str = include_str!("templates/common/gitignore");
/// The part of every C/Python/JavaScript build script that finds the pinned toolchains.
const TOOLS: &str = include_str!("templates/common/tools.sh");

const C: &[Template] = &[
    file("plugin.c", include_str!("templates/c/plugin.c")),
    script("build.sh", include_str!("templates/c/build.sh")),
];
const PYTHON: &[Template] = &[
    file("app.py", include_str!("templates/python/app.py")),
    script("build.sh", include_str!("templates/python/build.sh")),
];
const JS: &[Template] = &[
    file("plugin.js", include_str!("templates/js/plugin.js")),
    script("build.sh", include_str!("templates/js/build.sh")),
];
const RUST: &[Template] = &[
    file("Cargo.toml", include_str!("templates/rust/Cargo.toml.tmpl")),
    file("src/lib.rs", include_str!("templates/rust/src/lib.rs")),
    // Not `.cargo/config.toml` in the templates: cargo would read it when run from there.
    file(
        ".cargo/config.toml",
        include_str!("templates/rust/cargo-config.toml"),
    ),
    script("build.sh", include_str!("templates/rust/build.sh")),
];

/// Per language: its own files, the README's build section, the source a newcomer edits.
fn language(lang: Lang) -> (&'static [Template], &'static str, &'static str) {
    match lang {
        Lang::C => (C, include_str!("templates/c/build.md"), "plugin.c"),
        Lang::Python => (PYTHON, include_str!("templates/python/build.md"), "app.py"),
        Lang::Js => (JS, include_str!("templates/js/build.md"), "plugin.js"),
        Lang::Rust => (RUST, include_str!("templates/rust/build.md"), "src/lib.rs"),
    }
}

/// Names Cargo refuses for a package, or that would clash with the template's dependency.
const RUST_RESERVED: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "gen",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "alloc",
    "core",
    "std",
    "test",
    "proc_macro",
    "sharq_sdk",
    "wit_bindgen",
];

/// A project name: it becomes a directory, a file name and (in Rust) a package name, so only
/// ASCII letters, digits, `-` and `_`, starting with a letter.
pub fn validate_name(name: &str, lang: Lang) -> Result<(), ScaffoldError> {
    let bad = |why: &str| {
        Err(ScaffoldError::BadName {
            name: name.to_owned(),
            why: why.to_owned(),
        })
    };
    let Some(first) = name.chars().next() else {
        return bad("it is empty");
    };
    if !first.is_ascii_alphabetic() {
        return bad("it must start with an ASCII letter");
    }
    if name.len() > 64 {
        return bad("it is longer than 64 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return bad(&format!(
            "`{c}` is not allowed (only ASCII letters, digits, `-` and `_`)"
        ));
    }
    if lang == Lang::Rust && RUST_RESERVED.contains(&crate_name(name).as_str()) {
        return bad("Cargo reserves it, or it clashes with a dependency of the template");
    }
    Ok(())
}

/// The Rust library name of a package: Cargo turns `-` into `_`.
fn crate_name(name: &str) -> String {
    name.replace('-', "_")
}

/// A string as one shell word, single-quoted: the path is written into build.sh.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Replaces the `{{key}}` placeholders of a template.
fn render(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (key, value) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// The rendered files of a project `name` in `lang`, as (path inside the project, contents,
/// executable). Separate from writing so the tests can look at them.
pub fn project_files(name: &str, lang: Lang) -> Vec<(String, String, bool)> {
    let (own, build_section, source) = language(lang);
    let wasm = format!("{name}.wasm");
    let sdk = Path::new(REPO).join("plugins/sdk");
    let check_flags = if lang.needs_wasi() {
        " --wasi --memory-mib 96"
    } else {
        ""
    };
    let config_extra = if lang.needs_wasi() {
        "wasi = true                     # the interpreter imports WASI (granted empty)\n\
         memory_mib = 96                 # the interpreter needs more than the default 16 MiB\n"
    } else {
        ""
    };
    // `{{tools}}` and `{{build_section}}` first: they contain placeholders themselves.
    let vars = [
        ("tools", TOOLS.trim_end().to_owned()),
        ("build_section", build_section.trim_end().to_owned()),
        ("name", name.to_owned()),
        ("crate", crate_name(name)),
        ("lang_title", lang.title().to_owned()),
        (
            "world",
            if lang == Lang::Rust {
                "world `strategy-with-log`, through sharq-sdk, whose panic hook logs through it"
            } else {
                "world `strategy`: it exports the contract and imports nothing"
            }
            .to_owned(),
        ),
        ("source", source.to_owned()),
        ("wasm", wasm),
        ("check_flags", check_flags.to_owned()),
        ("config_extra", config_extra.to_owned()),
        ("wasi", lang.needs_wasi().to_string()),
        ("repo", REPO.to_owned()),
        ("repo_sh", shell_quote(REPO)),
        (
            "sdk_path_toml",
            toml::Value::String(sdk.display().to_string()).to_string(),
        ),
    ];
    let mut files = vec![
        ("README.md".to_owned(), render(README, &vars), false),
        ("scenario.toml".to_owned(), render(SCENARIO, &vars), false),
        (".gitignore".to_owned(), GITIGNORE.to_owned(), false),
        ("wit/sharq-dispatch.wit".to_owned(), WIT.to_owned(), false),
    ];
    for template in own {
        files.push((
            template.path.to_owned(),
            render(template.text, &vars),
            template.executable,
        ));
    }
    files
}

/// What the user should know before building a new `lang` project: the Rust template needs
/// the SDK in the checkout this binary came from, which may have moved or be older than it.
pub fn notes(lang: Lang) -> Vec<String> {
    let sdk = Path::new(REPO).join("plugins/sdk");
    if lang == Lang::Rust && !sdk.join("Cargo.toml").is_file() {
        vec![format!(
            "the Rust template depends on sharq-sdk at {}, which is missing: point the \
             `sharq-sdk` dependency in Cargo.toml at a sharq checkout that has it",
            sdk.display()
        )]
    } else {
        Vec::new()
    }
}

/// Creates `parent/name` and writes the project into it; returns the project's directory.
/// Refuses a directory that exists; removes what it wrote if writing fails.
pub fn create(parent: &Path, name: &str, lang: Lang) -> Result<PathBuf, ScaffoldError> {
    validate_name(name, lang)?;
    let dir = parent.join(name);
    // `create_dir`, not `create_dir_all`: it fails if the directory exists, with no window in
    // which another process could create it between a check and the creation.
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(ScaffoldError::Exists(dir))
        }
        Err(source) => return Err(ScaffoldError::Io { path: dir, source }),
    }
    if let Err(e) = write_files(&dir, &project_files(name, lang)) {
        // The directory is ours (we just created it): leave nothing half-written behind.
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(dir)
}

fn write_files(dir: &Path, files: &[(String, String, bool)]) -> Result<(), ScaffoldError> {
    for (relative, contents, executable) in files {
        let path = dir.join(relative);
        let io_error = |source| ScaffoldError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error)?;
        }
        fs::write(&path, contents).map_err(io_error)?;
        if *executable {
            make_executable(&path).map_err(io_error)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn make_executable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["tenant-router", "a", "A_1-b", "my_strategy2"] {
            assert!(validate_name(good, Lang::C).is_ok(), "{good}");
            assert!(validate_name(good, Lang::Rust).is_ok(), "{good}");
        }
        for bad in [
            "", "-x", "1abc", "_x", "a b", "a/b", "..", "a.b", "é", "x\n", "a$b",
        ] {
            let error = validate_name(bad, Lang::C).expect_err(bad).to_string();
            assert!(error.contains("invalid project name"), "{bad}: {error}");
        }
        assert!(validate_name(&"a".repeat(65), Lang::C).is_err());
        assert!(validate_name("fn", Lang::Rust).is_err());
        assert!(validate_name("sharq-sdk", Lang::Rust).is_err());
        assert!(validate_name("fn", Lang::C).is_ok());
    }

    #[test]
    fn refuses_existing_directory_and_bad_name() {
        let parent = tempfile::tempdir().unwrap();
        std::fs::create_dir(parent.path().join("taken")).unwrap();
        std::fs::write(parent.path().join("taken/keep"), "mine").unwrap();
        let error = create(parent.path(), "taken", Lang::C).unwrap_err();
        assert!(matches!(error, ScaffoldError::Exists(_)), "{error}");
        assert!(error.to_string().contains("already exists"), "{error}");
        // Nothing of the existing directory was touched.
        assert_eq!(
            std::fs::read_to_string(parent.path().join("taken/keep")).unwrap(),
            "mine"
        );
        let error = create(parent.path(), "../escape", Lang::Js).unwrap_err();
        assert!(matches!(error, ScaffoldError::BadName { .. }), "{error}");
        assert!(!parent.path().join("../escape").exists());
    }

    #[test]
    fn every_placeholder_is_filled() {
        for lang in Lang::ALL {
            let files = project_files("demo-x", lang);
            for (path, contents, _) in &files {
                assert!(!contents.contains("{{"), "{lang:?} {path}: {contents}");
            }
            let paths: Vec<&str> = files.iter().map(|(p, _, _)| p.as_str()).collect();
            for expected in [
                "README.md",
                "scenario.toml",
                "wit/sharq-dispatch.wit",
                "build.sh",
            ] {
                assert!(paths.contains(&expected), "{lang:?}: {paths:?}");
            }
            let scenario = &files[1].1;
            let parsed: toml::Table = toml::from_str(scenario).expect("scenario.toml parses");
            assert_eq!(
                parsed.get("wasi").and_then(toml::Value::as_bool),
                Some(lang.needs_wasi())
            );
        }
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
