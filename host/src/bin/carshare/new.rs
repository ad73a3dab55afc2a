//! `carshare new context NAME`: a working context crate to start from (a collection served
//! over HTTP, an event declared and published, a harness test), whose dependencies on the
//! guest SDK, the built-in contexts' events and the harness point at a carshare checkout by
//! absolute path, so the crate can live anywhere.

use std::path::{Path, PathBuf};

use crate::cli::NewContextArgs;

const CARGO_TOML: &str = include_str!("template/Cargo.toml.in");
const LIB_RS: &str = include_str!("template/lib.rs.in");
const TEST_RS: &str = include_str!("template/test.rs.in");
const GITIGNORE: &str = include_str!("template/gitignore.in");

/// Words Rust (and so cargo, as a package name) keeps for itself.
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn",
    "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop",
    "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return", "self", "static",
    "struct", "super", "trait", "true", "try", "type", "typeof", "unsafe", "unsized", "use", "virtual",
    "where", "while", "yield", "test", "core", "std", "alloc",
];

/// Writes the crate; returns what to tell the user.
pub fn context(args: &NewContextArgs) -> Result<String, String> {
    let name = args.name.as_str();
    check_name(name)?;
    let carshare = checkout(args.carshare.as_deref())?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .next()
            .is_some()
    {
        return Err(format!(
            "{} exists and is not empty: nothing written",
            dir.display()
        ));
    }
    let camel: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{collection}}", &format!("{name}s"))
            .replace("{{Camel}}", &camel)
            .replace("{{UPPER}}", &name.replace('-', "_").to_uppercase())
            .replace("{{snake}}", &name.replace('-', "_"))
            .replace("{{carshare}}", &carshare.display().to_string())
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        (".gitignore", GITIGNORE.to_string()),
        ("src/lib.rs", fill(LIB_RS)),
        (&format!("tests/{}.rs", name.replace('-', "_")), fill(TEST_RS)),
    ];
    for (file, text) in &files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let d = dir.display();
    Ok(format!(
        "made context {name} in {d} (routes /{name}s, event {camel}Created)\n\
         build:  cd {d} && cargo build --release --target wasm32-wasip2\n\
         test:   cd {d} && cargo test --release\n\
         add:    carshare contexts add {name} {d}/target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ))
}

/// A context name that is also a usable crate name and not a built-in context's.
fn check_name(name: &str) -> Result<(), String> {
    let shaped = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--");
    if !shaped {
        return Err(format!(
            "{name:?} is not a context name: 1-64 of a-z, 0-9 and single inner -, starting with a letter"
        ));
    }
    if carshare_host::DEFAULT_CONTEXTS.iter().any(|(b, _)| *b == name) {
        return Err(format!("{name} is a built-in context: choose another name"));
    }
    if KEYWORDS.contains(&name) {
        return Err(format!(
            "{name} is a word Rust keeps for itself: choose another name"
        ));
    }
    Ok(())
}

/// The carshare checkout the crate depends on: `given`, or the one this binary was built from.
fn checkout(given: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    };
    let dir = std::fs::canonicalize(&dir).map_err(|e| {
        format!(
            "cannot find the carshare checkout at {} ({e}): pass --carshare DIR",
            dir.display()
        )
    })?;
    if !dir.join("plugins/guest/Cargo.toml").is_file() || !dir.join("host/testing/Cargo.toml").is_file() {
        return Err(format!(
            "{} is not a carshare checkout (no plugins/guest, no host/testing): pass --carshare DIR",
            dir.display()
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_context_and_crate_names() {
        for ok in ["rating", "gift-card", "a1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Rating",
            "1st",
            "gift_card",
            "-x",
            "x-",
            "a--b",
            "order",
            "type",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
