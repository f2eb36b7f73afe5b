//! The import rules ARCHITECTURE.md states, checked on the source: every `crate::`,
//! `super::` and `self::` path of every file in src/ outside its tests, resolved to the
//! file of the module it names (through a parent's `pub use child::Item`), gives the
//! graph of imports between files. Pure: reads files, starts nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path: `["daemon", "commands"]` for src/daemon/commands/mod.rs.
type Module = Vec<String>;

struct Source {
    /// Module → its file's text, tests left out.
    files: BTreeMap<Module, String>,
    /// Module → (item → the child module it re-exports it from).
    reexports: BTreeMap<Module, BTreeMap<String, String>>,
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if m.last().is_some_and(|l| l == "mod" || l == "lib") {
        m.pop();
    }
    m
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `mod NAME;` declarations gated on tests (`#[cfg(test)]`, `#[cfg(all(test, ...))]`),
/// with the file a `#[path]` gives them: whole files of tests.
fn test_files(src: &Path, files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim();
            let Some(name) = t
                .strip_prefix("mod ")
                .or_else(|| t.strip_prefix("pub(crate) mod "))
                .and_then(|r| r.strip_suffix(';'))
            else {
                continue;
            };
            let attrs = &lines[i.saturating_sub(3)..i];
            if !attrs
                .iter()
                .any(|a| a.trim().starts_with("#[cfg(") && a.contains("test"))
            {
                continue;
            }
            let dir = if f.ends_with("mod.rs") || f.ends_with("lib.rs") {
                f.parent().unwrap().to_path_buf()
            } else {
                f.with_extension("")
            };
            let path = attrs.iter().find_map(|a| {
                a.trim()
                    .strip_prefix("#[path = \"")
                    .and_then(|r| r.strip_suffix("\"]"))
            });
            match path {
                Some(p) => out.insert(f.parent().unwrap().join(p)),
                None => {
                    out.insert(dir.join(format!("{name}.rs")));
                    out.insert(dir.join(name).join("mod.rs"))
                }
            };
        }
    }
    let _ = src;
    out
}

/// The code of a file: its comments and its inline test module left out.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim();
        if t.starts_with("//") {
            continue;
        }
        if t.starts_with("#[cfg(") && t.contains("test") {
            if let Some(next) = lines.peek() {
                if next.trim().starts_with("mod ") && next.trim().ends_with('{') {
                    break;
                }
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn load() -> Source {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    rust_files(&src, &mut all);
    let tests = test_files(&src, &all);
    let mut files = BTreeMap::new();
    let mut reexports: BTreeMap<Module, BTreeMap<String, String>> = BTreeMap::new();
    for f in all.iter().filter(|f| !tests.contains(*f)) {
        if f.ends_with("main.rs") {
            continue;
        }
        let text = without_tests(&std::fs::read_to_string(f).unwrap());
        let m = module_of(&src, f);
        for stmt in uses(&text) {
            let body = stmt
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ");
            let Some(path) = body.strip_prefix("use ") else {
                continue;
            };
            if !stmt.starts_with("pub")
                || path.starts_with("crate::")
                || path.starts_with("super::")
            {
                continue;
            }
            for p in expand(path) {
                let segs: Vec<&str> = p.split("::").collect();
                if let [child, .., item] = segs[..] {
                    if segs.len() >= 2 && child != "self" {
                        reexports
                            .entry(m.clone())
                            .or_default()
                            .insert(item.to_string(), child.to_string());
                    }
                }
            }
        }
        files.insert(m, text);
    }
    Source { files, reexports }
}

/// Every `use ...;` statement, joined onto one line.
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for l in text.lines() {
        let t = l.trim();
        if let Some(c) = cur.as_mut() {
            c.push_str(t);
        } else if t.starts_with("use ")
            || t.starts_with("pub use ")
            || t.starts_with("pub(crate) use ")
        {
            cur = Some(t.to_string());
        }
        if cur.as_ref().is_some_and(|c| c.ends_with(';')) {
            out.push(cur.take().unwrap().trim_end_matches(';').to_string());
        }
    }
    out
}

/// A use tree's paths: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.replace(' ', "");
    let Some(open) = tree.find('{') else {
        let plain = tree.split("as").next().unwrap_or(&tree).to_string();
        return vec![plain.trim_end_matches("::self").to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.len() - 1];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            expand(p).into_iter().map(move |e| match e.as_str() {
                "self" => prefix.trim_end_matches("::").to_string(),
                _ => format!("{prefix}{e}"),
            })
        })
        .collect()
}

/// Every path rooted at `crate`, `super` or `self` in a file: its use statements
/// expanded, and the paths written inline in its code.
fn paths(text: &str) -> Vec<String> {
    let mut out: Vec<String> = uses(text)
        .iter()
        .filter_map(|u| u.split_once("use ").map(|(_, p)| p.to_string()))
        .flat_map(|p| expand(&p))
        .collect();
    let bytes = text.as_bytes();
    for root in ["crate::", "super::", "self::"] {
        let mut at = 0;
        while let Some(i) = text[at..].find(root) {
            let i = at + i;
            at = i + root.len();
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(text.len(), |e| i + e);
            out.push(text[i..end].trim_end_matches(':').to_string());
        }
    }
    out
}

impl Source {
    /// The module file a path written in `from` names.
    fn resolve(&self, from: &Module, path: &str) -> Option<Module> {
        let mut segs = path.split("::");
        let mut m: Module = match segs.next()? {
            "crate" => vec![],
            "self" => from.clone(),
            "super" => from[..from.len().checked_sub(1)?].to_vec(),
            _ => return None,
        };
        for s in segs {
            if s == "super" {
                m.pop();
                continue;
            }
            let mut next = m.clone();
            next.push(s.to_string());
            if self.files.contains_key(&next) {
                m = next;
                continue;
            }
            if let Some(child) = self.reexports.get(&m).and_then(|r| r.get(s)) {
                let mut c = m.clone();
                c.push(child.clone());
                if self.files.contains_key(&c) {
                    m = c;
                }
            }
            break;
        }
        Some(m)
    }

    /// File → the files it imports, a module and its own children not counted.
    fn graph(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut g = BTreeMap::new();
        for (m, text) in &self.files {
            let to: BTreeSet<Module> = paths(text)
                .iter()
                .filter_map(|p| self.resolve(m, p))
                .filter(|t| !t.starts_with(m) && !m.starts_with(t))
                .collect();
            g.insert(m.clone(), to);
        }
        g
    }
}

fn name(m: &Module) -> String {
    format!("src/{}", m.join("/"))
}

/// The graph's strongly connected components of more than one file: its circles.
fn circles(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Tarjan's algorithm.
    struct T<'a> {
        g: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a Module) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let Some((w, _)) = self.g.get_key_value(w) else {
                    continue;
                };
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[w].min(self.low[v]);
                    self.low.insert(v, l);
                } else if self.on.contains(w) {
                    let l = self.index[w].min(self.low[v]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut c = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    c.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if c.len() > 1 {
                    self.out.push(c);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn no_file_in_src_imports_a_file_that_imports_it_back() {
    let g = load().graph();
    assert!(g.len() > 100, "{} files read", g.len());
    let found: Vec<String> = circles(&g)
        .iter()
        .map(|c| {
            let files: Vec<String> = c.iter().map(name).collect();
            format!("a circle among {}", files.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_import_boundaries_of_architecture_md_hold() {
    let g = load().graph();
    let m = |s: &str| -> Module { s.split('/').map(str::to_string).collect() };
    // (who, what it must not import)
    let rules: &[(&str, &[&str])] = &[
        // The page reads the store and the feed; the platform's link is not its door.
        ("http", &["link", "daemon", "station", "agent"]),
        // The store knows the database and the contract's words, nothing above them.
        (
            "store",
            &[
                "link", "agent", "daemon", "station", "http", "cli", "modem", "reader",
            ],
        ),
        (
            "contract",
            &["link", "store", "agent", "daemon", "http", "cli"],
        ),
        // The engines: pure or device-facing, never the platform.
        (
            "card",
            &[
                "link", "store", "agent", "daemon", "http", "modem", "reader",
            ],
        ),
        (
            "at",
            &["link", "store", "agent", "daemon", "http", "modem", "card"],
        ),
        ("modem", &["link", "agent", "daemon", "http", "station"]),
        (
            "reader",
            &["link", "store", "agent", "daemon", "http", "modem"],
        ),
        ("rules", &["link", "store", "agent", "daemon", "http"]),
        ("link", &["agent", "daemon", "station", "http"]),
        ("agent", &["daemon", "station"]),
        // What the agent publishes does not depend on how inbound messages are read.
        (
            "contract/topics",
            &["contract/commands", "contract/records"],
        ),
        (
            "contract/payloads",
            &["contract/commands", "contract/records"],
        ),
        // The link's parts under the driver: only the driver reaches into the handle,
        // only the link's mod.rs builds both.
        ("link/settings", &["link/handle", "link/driver"]),
        ("link/tls", &["link/handle", "link/driver"]),
        ("link/pump", &["link/handle", "link/driver"]),
        ("link/inflight", &["link/handle", "link/driver"]),
        ("link/inbound", &["link/handle", "link/driver"]),
        // What a caller may ask of a modem supervisor, apart from how it is served.
        (
            "modem/supervisor/handle",
            &[
                "modem/supervisor/lifecycle",
                "modem/supervisor/attached",
                "modem/supervisor/usage",
            ],
        ),
        // The daemon's work seam is a leaf among its siblings.
        (
            "daemon/work",
            &[
                "daemon/commands",
                "daemon/rules",
                "daemon/refill",
                "daemon/swap",
                "daemon/modems",
                "daemon/readers",
            ],
        ),
    ];
    let mut broken = Vec::new();
    for (who, never) in rules {
        let who = m(who);
        for (from, to) in &g {
            if !from.starts_with(&who) {
                continue;
            }
            for t in to {
                if never.iter().any(|n| t.starts_with(&m(n))) {
                    broken.push(format!("{} imports {}", name(from), name(t)));
                }
            }
        }
    }
    // Nothing imports the command line, nor (outside tests) the fuzz targets.
    for (from, to) in &g {
        for t in to {
            if (t.starts_with(&m("cli")) && !from.starts_with(&m("cli")))
                || (t.starts_with(&m("fuzz")) && !from.starts_with(&m("fuzz")))
            {
                broken.push(format!("{} imports {}", name(from), name(t)));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn only_its_module_knows_the_mqtt_client_the_database_and_the_web_server() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    rust_files(&src, &mut all);
    // (crate, the directory that may name it; src/emu's test SM-DP+ borrows rumqttc's
    // tokio-rustls re-export, a test device's shortcut, never in the gateway build)
    let owners: &[(&str, &[&str])] = &[
        ("rumqttc::", &["link", "emu"]),
        ("sled::", &["store"]),
        ("axum::", &["http"]),
    ];
    let mut broken = Vec::new();
    for f in &all {
        let text = std::fs::read_to_string(f).unwrap();
        let m = module_of(&src, f);
        for (krate, dirs) in owners {
            let mentions = text.lines().any(|l| {
                let t = l.trim_start();
                !t.starts_with("//") && t.contains(krate)
            });
            if mentions && !dirs.iter().any(|d| m.first().is_some_and(|h| h == d)) {
                broken.push(format!("{} names {krate}", f.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// A file's text with its comments, strings and character literals blanked (each byte
/// kept as a space, newlines kept), so braces can be counted and lines still number.
fn code_only(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |e| i + e);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"r\"") || rest.starts_with(b"r#") {
            // A raw string: r"...", r#"..."#, closed by the same number of hashes.
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let start = i + 2 + hashes;
            let end = text[start..]
                .find(&close)
                .map_or(b.len(), |e| start + e + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if rest[0] == b'\'' {
            // A character literal ('{', '\''), or a lifetime ('a), which is left alone.
            let end = if rest.get(1) == Some(&b'\\') {
                rest[2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|e| i + 2 + e + 1)
            } else {
                let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + len) == Some(&b'\'')).then_some(i + 2 + len)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every function with a body in a file: (name, first line, its length in lines, from
/// the `fn` line to its closing brace).
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let code = code_only(text);
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let line_of = |at: usize| code[..at].iter().filter(|&&c| c == b'\n').count() + 1;
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = code[at..].windows(3).position(|w| w == b"fn ") {
        let i = at + i;
        at = i + 3;
        if i > 0 && is_word(code[i - 1]) {
            continue;
        }
        let name_len = code[at..].iter().take_while(|&&c| is_word(c)).count();
        if name_len == 0 {
            continue; // `fn(` types, `Fn ` bounds
        }
        let name = String::from_utf8_lossy(&code[at..at + name_len]).into_owned();
        // The body opens at the first `{` after the signature, unless a `;` ends a
        // declaration first (a trait's method without a default, an extern fn).
        let Some(open) = code[at..].iter().position(|&c| c == b'{' || c == b';') else {
            continue;
        };
        let open = at + open;
        if code[open] == b';' {
            continue;
        }
        let mut depth = 0usize;
        let mut close = None;
        for (j, &c) in code[open..].iter().enumerate() {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(open + j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { continue };
        let first = line_of(i);
        out.push((name, first, line_of(close) - first + 1));
    }
    out
}

/// The longest a function may grow before it is a reader's problem.
const LONGEST_FN: usize = 150;

/// Functions allowed past `LONGEST_FN`, each with why: (file under src/, fn, reason).
/// Long for a reason: a dispatch table, one arm per case, each arm short.
const LONG_FNS: &[(&str, &str, &str)] = &[
    (
        "cli/watch.rs",
        "describe_event",
        "one arm per contract::EventKind, a line each",
    ),
    (
        "emu/modem.rs",
        "command",
        "the emulated modem's AT dispatch: one arm per command it answers",
    ),
    (
        "emu/vcard/card.rs",
        "es10",
        "the virtual eUICC's ES10 dispatch: one arm per SGP.22 §5.7 function",
    ),
    (
        "schema/tests.rs",
        "payloads_the_code_writes_validate_against_their_schemas",
        "a table of data: one example of every payload shape",
    ),
];

#[test]
fn no_function_in_src_is_over_150_lines_but_the_listed_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    rust_files(&src, &mut all);
    all.sort();
    let mut long = Vec::new();
    let mut allowed_seen = BTreeSet::new();
    for f in &all {
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(&src).unwrap().display().to_string();
        for (name, line, len) in functions(&text) {
            if len <= LONGEST_FN {
                continue;
            }
            match LONG_FNS
                .iter()
                .find(|(file, n, _)| *file == rel && *n == name)
            {
                Some(entry) => {
                    allowed_seen.insert(entry.0.to_string() + "::" + entry.1);
                }
                None => long.push(format!("src/{rel}:{line} fn {name}: {len} lines")),
            }
        }
    }
    // An entry whose function got short (or went) leaves the list too.
    let stale: Vec<String> = LONG_FNS
        .iter()
        .map(|(file, n, _)| format!("{file}::{n}"))
        .filter(|k| !allowed_seen.contains(k))
        .collect();
    assert!(
        long.is_empty() && stale.is_empty(),
        "functions over {LONGEST_FN} lines:\n{}\nallowed but no longer long: {stale:?}",
        long.join("\n")
    );
}
