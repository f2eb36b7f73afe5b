//! Where a TOML file went wrong, said on one line: the one shape of a TOML error for
//! every file simgate reads (the configuration, modem profiles, the emulators' images);
//! and which TOML files of a directory of overrides are read, in what order.
//! A leaf: the configuration and the modem profiles both use it, and one of them uses
//! the other.

/// A TOML error on one line: `origin:line` and toml's message with the offending line
/// itself, which names the key, so the user can jump there (toml's own Display spans
/// several lines with a caret drawing). Shared by every TOML file simgate reads; an
/// empty `origin` gives "line N".
pub fn toml_error_at(e: &toml::de::Error, text: &str, origin: &str) -> (String, String) {
    let message = e.message().trim_end().to_string();
    match e.span() {
        Some(span) => {
            // `span.start` comes from the parser over this very text; `get` keeps an
            // out-of-range span from panicking all the same.
            let before = text.get(..span.start).unwrap_or(text);
            let line_no = before.matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            let at = if origin.is_empty() {
                format!("line {line_no}")
            } else {
                format!("{origin}:{line_no}")
            };
            match line.is_empty() {
                true => (at, message),
                false => (at, format!("{message} (in `{line}`)")),
            }
        }
        None => (origin.to_string(), message),
    }
}

/// `text` as a `T`, or its error on one line (`line N: message`): the data files of
/// the emulators (card images, the SM-DP+'s profiles), whose loaders add the file.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| {
        let (at, message) = toml_error_at(&e, text, "");
        if at.is_empty() {
            message
        } else {
            format!("{at}: {message}")
        }
    })
}

/// The `*.toml` files of `dir`, in name order (user overrides apply in that order).
pub fn toml_files(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}
