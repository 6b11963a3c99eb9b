//! The module graph between postgate's rooms (the top-level modules of `src/`), read off the
//! `crate::` and `super::` paths of every source file, and checked against the agreed direction
//! (docs/ARCHITECTURE.md): `http -> (s3 | links | api) -> objects -> storage -> db`, with the pure
//! modules as leaves every layer may use. A new import circle, or an import against the
//! direction, fails this test, so CI catches it before it sets.
//!
//! `cargo modules dependencies --lib --acyclic` draws the same graph in more detail; this test
//! needs no tool and runs with the rest of the suite.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which rooms each room may import. A room missing here fails the test: a new room states its
/// place in the layering when it is added.
const ALLOWED: &[(&str, &[&str])] = &[
    // Entry points for the fuzz targets in fuzz/: they reach private parsers of the S3 area.
    ("fuzzing", &["error", "s3", "xml"]),
    // The edge: the router is the only place that imports every area.
    (
        "http",
        &[
            "api",
            "config",
            "error",
            "links",
            "s3",
            "state",
            "telemetry",
        ],
    ),
    // The areas: each speaks one protocol and calls the core; none reaches `storage` but through
    // it (the storage backend's one seam).
    (
        "s3",
        &[
            "auth",
            "config",
            "cors",
            "db",
            "error",
            "events",
            "names",
            "objects",
            "policy",
            "sniff",
            "state",
            "telemetry",
            "units",
            "xml",
            // A form posted with a link's policy, and the parts of a link's upload, are held to
            // the link's rules (`links::link`); links never import s3.
            "links",
            // Multipart upload rows: this SQLite or the nodes' shared PostgreSQL.
            "control",
        ],
    ),
    (
        "links",
        &[
            "auth",
            "config",
            "cors",
            "db",
            "error",
            "events",
            "names",
            "objects",
            "policy",
            "state",
            "telemetry",
            "units",
            // A link's row and counter: this SQLite or the nodes' shared PostgreSQL.
            "control",
        ],
    ),
    (
        "api",
        // The JSON API checks signatures as S3 does, with the check the router hands it
        // (`api::CheckSignature`): it does not import the S3 area.
        &[
            "auth",
            "config",
            "cors",
            "db",
            "error",
            "events",
            "links",
            "names",
            "objects",
            "policy",
            "state",
            "units",
            // Notes the bucket, key, signer and link of its requests for the access log.
            "telemetry",
            "control",
        ],
    ),
    // Shared state: the database, the storage backend and caches (decoded POST policies
    // among them); imports no area.
    (
        "state",
        &[
            "auth",
            "config",
            "db",
            "error",
            "events",
            "objects",
            "policy",
            "storage",
            "telemetry",
            "control",
        ],
    ),
    // The core: knows nothing of HTTP, areas, routing or S3's error codes (see NEVER).
    // `control`: multipart upload rows, this SQLite or the nodes' shared PostgreSQL
    // (`control::Uploads`).
    (
        "objects",
        &[
            "auth", "config", "control", "db", "events", "names", "sniff", "storage", "units",
        ],
    ),
    // Object events: the format, who wants which (cached), the outbox the core writes in its
    // transactions, and the delivery worker. Below the core, above the database.
    // With `--control-db` the outbox is the control database's (`control::Pg`'s statements).
    ("events", &["config", "control", "db", "telemetry", "xml"]),
    // The storage backend seam: object bytes (`storage/fs.rs` on disk) and the object catalog
    // (SQLite rows through `db`, for the filesystem store). Below the core, above the database.
    // `storage::s3` is the client of an S3 cluster: leaves only, no HTTP server.
    (
        "storage",
        &["auth", "config", "db", "names", "sniff", "units", "xml"],
    ),
    // The control state shared by several nodes (`--control-db`): the PostgreSQL twin of
    // `db::links` and the `Links` seam that picks it or SQLite. Beside `db`, over it.
    ("control", &["db"]),
    ("db", &["config", "names", "units"]),
    // Errors: every mapping to S3 errors, from the core and the layers below it.
    (
        "error",
        &[
            "auth", "db", "names", "objects", "policy", "sniff", "storage", "xml",
        ],
    ),
    // Pure leaves.
    ("auth", &["names", "units"]),
    ("policy", &["auth", "names", "sniff", "units"]),
    // CORS in one room: bucket rules (pure), their answers on S3 paths, the `/-/` routes' layer.
    ("cors", &["error", "xml"]),
    ("names", &[]),
    ("xml", &[]),
    // Configuration; a backend bucket is checked with S3's naming rules.
    ("config", &["names", "units"]),
    ("units", &[]),
    // What an upload's first bytes are, and whether they match the declared type.
    ("sniff", &[]),
    // What handlers note for the access log, and the metrics registry: imports nothing.
    ("telemetry", &[]),
];

/// Edges that must stay out of ALLOWED, with the reason: editing the table cannot bring them back.
const NEVER: &[(&str, &str, &str)] = &[
    (
        "objects",
        "error",
        "the core answers with its own `objects::Error`; `error.rs` maps it to S3's codes",
    ),
    ("s3", "storage", STORAGE_SEAM),
    ("links", "storage", STORAGE_SEAM),
    ("api", "storage", STORAGE_SEAM),
    (
        "storage",
        "events",
        "the backend stores objects; which events a change records is the core's (`objects/`)",
    ),
];
const STORAGE_SEAM: &str =
    "the areas reach the storage backend through `objects/`, so a backend is swapped in one place";

/// Rooms that may not mention `axum` at all: the core and what lies under it.
const NO_HTTP_FRAMEWORK: &[&str] = &["objects", "db", "storage", "events", "control"];

#[test]
fn module_graph_has_no_cycle_and_follows_the_agreed_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(room, deps)| (*room, deps.iter().copied().collect()))
        .collect();

    let mut faults = Vec::new();
    for (room, dep, why) in NEVER {
        if allowed.get(room).is_some_and(|may| may.contains(dep)) {
            faults.push(format!("ALLOWED lets `{room}` import `{dep}`: {why}"));
        }
        if let Some(file) = graph.edges.get(*room).and_then(|deps| deps.get(*dep)) {
            faults.push(format!("`{room}` imports `{dep}` ({file}): {why}"));
        }
    }
    for (room, deps) in &graph.edges {
        let Some(may) = allowed.get(room.as_str()) else {
            faults.push(format!(
                "room `{room}` is not in ALLOWED (tests/architecture.rs): give it a place"
            ));
            continue;
        };
        for (dep, file) in deps {
            if !may.contains(dep.as_str()) {
                faults.push(format!(
                    "`{room}` imports `{dep}` ({file}), against the direction"
                ));
            }
        }
    }
    for cycle in cycles(&graph.edges) {
        faults.push(format!("import cycle among: {}", cycle.join(" -> ")));
    }
    for (room, file) in &graph.uses_axum {
        if NO_HTTP_FRAMEWORK.contains(&room.as_str()) {
            faults.push(format!(
                "`{room}` uses axum ({file}); it must not know HTTP"
            ));
        }
    }
    assert!(
        faults.is_empty(),
        "module graph:\n{}\nfaults:\n  {}",
        graph.render(),
        faults.join("\n  ")
    );
}

/// The checker itself: it must see a circle and a grouped import.
#[test]
fn the_checker_sees_cycles_and_grouped_imports() {
    let mut edges = BTreeMap::new();
    let text = "use crate::{a::X, b};\nfn f() { crate::c::g(); super::d::h(); }";
    for dep in imported_rooms(text, &["top".to_owned()]) {
        edges
            .entry("top".to_owned())
            .or_insert_with(BTreeMap::new)
            .insert(dep, String::new());
    }
    let found: Vec<_> = edges["top"].keys().cloned().collect();
    assert_eq!(found, ["a", "b", "c", "d"]);
    edges
        .entry("a".to_owned())
        .or_default()
        .insert("top".to_owned(), String::new());
    assert_eq!(cycles(&edges), vec![vec!["a", "top", "a"]]);
}

struct Graph {
    /// room -> (room it imports -> one file that does).
    edges: BTreeMap<String, BTreeMap<String, String>>,
    /// room -> one file of it that names `axum`.
    uses_axum: BTreeMap<String, String>,
}

impl Graph {
    fn render(&self) -> String {
        self.edges
            .iter()
            .map(|(room, deps)| {
                let deps: Vec<&str> = deps.keys().map(String::as_str).collect();
                format!("  {room} -> {}", deps.join(", "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph {
        edges: BTreeMap::new(),
        uses_axum: BTreeMap::new(),
    };
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let module = module_path(rel);
        // The crate root and the binary wire rooms together; they are not rooms.
        let Some(room) = module.first().cloned() else {
            continue;
        };
        let text = strip_comments(&std::fs::read_to_string(&file).unwrap());
        let shown = rel.display().to_string();
        let deps = graph.edges.entry(room.clone()).or_default();
        for dep in imported_rooms(&text, &module) {
            if dep != room {
                deps.entry(dep).or_insert_with(|| shown.clone());
            }
        }
        if text.contains("axum::") {
            graph.uses_axum.entry(room).or_insert(shown);
        }
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `s3/object.rs` -> `[s3, object]`; `s3/mod.rs` -> `[s3]`; `lib.rs` and `main.rs` -> `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Removes `//` and `/* */` comments (doc comments included), so that a path named in prose is
/// not counted as an import. String literals are left alone: postgate's hold no `crate::`.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else if rest.starts_with('"') {
            // Skip a string literal whole, so that a "//" inside one is not taken for a comment.
            let mut end = 1;
            let bytes = rest.as_bytes();
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            let end = (end + 1).min(rest.len());
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The top-level rooms a file's text names through `crate::` or a `super::` chain that climbs
/// to the crate root. `module` is the file's own module path.
fn imported_rooms(text: &str, module: &[String]) -> BTreeSet<String> {
    let mut rooms = BTreeSet::new();
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut i = 0;
    while i < text.len() {
        let at = &text[i..];
        let starts_word = i == 0 || !is_ident(bytes[i - 1]);
        if starts_word && at.starts_with("crate::") {
            collect_after(&at["crate::".len()..], &mut rooms);
            i += "crate::".len();
        } else if starts_word && at.starts_with("super::") {
            let mut depth = module.len();
            let mut tail = at;
            while let Some(t) = tail.strip_prefix("super::") {
                depth = depth.saturating_sub(1);
                tail = t;
            }
            if depth == 0 {
                collect_after(tail, &mut rooms);
            }
            i += at.len() - tail.len();
        } else {
            i += at.chars().next().unwrap().len_utf8();
        }
    }
    rooms
}

/// Reads the room names at the start of `tail`: one identifier, or a `{a::.., b, ..}` group.
fn collect_after(tail: &str, rooms: &mut BTreeSet<String>) {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = tail.strip_prefix('{') else {
        let name = ident(tail);
        if !name.is_empty() && name != "self" {
            rooms.insert(name);
        }
        return;
    };
    let (mut depth, mut start) = (0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                let name = ident(&group[start..i]);
                if !name.is_empty() {
                    rooms.insert(name);
                }
                return;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                let name = ident(&group[start..i]);
                if !name.is_empty() && name != "self" {
                    rooms.insert(name);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
}

/// The knots of the graph: its strongly connected parts of more than one room (Tarjan), each
/// sorted, each followed by its first room again so that it reads as a circle (`a -> b -> a`).
fn cycles(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'a str, (usize, usize)>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, room: &'a str) {
            let n = self.index.len();
            self.index.insert(room, (n, n));
            self.stack.push(room);
            for next in self.edges.get(room).into_iter().flat_map(|d| d.keys()) {
                match self.index.get(next.as_str()) {
                    None => {
                        self.visit(next);
                        let low = self.index[next.as_str()].1;
                        let entry = self.index.get_mut(room).unwrap();
                        entry.1 = entry.1.min(low);
                    }
                    Some(&(at, _)) if self.stack.contains(&next.as_str()) => {
                        let entry = self.index.get_mut(room).unwrap();
                        entry.1 = entry.1.min(at);
                    }
                    Some(_) => {}
                }
            }
            let (at, low) = self.index[room];
            if at == low {
                let split = self.stack.iter().position(|r| *r == room).unwrap();
                let mut part: Vec<String> = self.stack.drain(split..).map(str::to_owned).collect();
                if part.len() > 1 {
                    part.sort();
                    part.push(part[0].clone());
                    self.found.push(part);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for room in edges.keys() {
        if !t.index.contains_key(room.as_str()) {
            t.visit(room);
        }
    }
    t.found.sort();
    t.found
}
