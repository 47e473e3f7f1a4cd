//! The workspace's layering, checked from the source: in every library crate, no two
//! files import each other in a loop, and no module imports one of a higher layer (the
//! layers of `LAYERS`, which docs/ARCHITECTURE.md draws).
//!
//! Run it alone with `cargo nextest run -p testbed --test layering`. It reads `use`
//! declarations and paths in code (`crate::a::b`, `super::x`, a child module's name) of
//! the files a crate's `lib.rs` reaches through `mod` declarations that are not
//! `#[cfg(test)]`, and resolves each to the file that defines the module it names. An
//! item is imported from the file that defines it: a path through a re-export in a face
//! (`lib.rs`, `mod.rs`) counts as an import of the face.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Crates whose files are checked, by directory (from `lib.rs`, or `main.rs` for a binary).
const CRATES: &[&str] = &[
    "ca",
    "xds-types",
    "translator",
    "xds-server",
    "xds-server/xdsctl",
    "testbed",
    "crds",
    "conformance",
];

/// The layers of each crate, bottom up (docs/ARCHITECTURE.md draws them): a module, and
/// the files under it, may import only modules of its own layer or lower ones. A module
/// takes the layer of the longest listed path that it is or is under; every module of a
/// listed crate must have one. The crate root (`lib.rs`) is the face, above them all.
const LAYERS: &[(&str, &[&[&str]])] = &[
    ("xds-types", &[&["kind", "names", "csds"], &["per_type"]]),
    (
        "ca",
        &[
            &["spiffe", "error"],
            &["verify", "deny"],
            &["certs", "csr"],
            &["authority"],
        ],
    ),
    (
        "translator",
        &[
            // Types and the model.
            &[
                "output", "mesh", "model", "identity", "names", "serving", "encoded", "json",
            ],
            // The proxy-neutral routing IR.
            &["routing"],
            // Resolvers: model to IR.
            &["gamma", "policy"],
            // Rendering both emitters share, and what makes a client kind.
            &["render"],
            // Emitters, one per client kind; status of the mesh's objects.
            &["envoy", "grpc", "status"],
            // The incremental builder, and the from-scratch oracle it is tested against.
            &["incremental", "oracle"],
        ],
    ),
    (
        "conformance",
        &[
            // The proxy's own configuration values; metrics.
            &["config", "stats"],
            // xDS to configuration; the published snapshot.
            &["convert", "live"],
            // The xDS client; the data path.
            &["xds", "data"],
            // The admin port, then wiring.
            &["admin"],
            &["run"],
        ],
    ),
    (
        "xds-server",
        &[
            // The floor: nothing here imports anything above it.
            &[
                "runtime",
                "config",
                "private_files",
                "log_limit",
                "observability::metrics",
                "observability::memory",
                "xds::wire::budget",
            ],
            // Every port's front door and the hardened HTTP shells.
            &["net"],
            // The CA, the certificates it issues, the certificate endpoint.
            &["pki"],
            // Serving xDS, the manifest source, the proxy registry, CSDS and NACK record.
            &["xds", "source", "observability"],
            // Kubernetes (watch, status, injector), the admin endpoint, the CNI plugin.
            &["k8s", "admin", "cni"],
            // The agent beside each proxy.
            &["agent"],
            // Wiring, then the command line.
            &["server"],
            &["cli"],
        ],
    ),
];

#[test]
fn no_file_imports_another_in_a_loop() {
    let mut found = Vec::new();
    for krate in CRATES {
        let graph = Graph::of_crate(&workspace().join(krate));
        for circle in graph.circles() {
            found.push(format!("{krate}: {}", graph.describe(&circle)));
        }
    }
    assert!(
        found.is_empty(),
        "files that import each other in a loop (import each item from the file that \
         defines it, and move what both need down a layer):\n{}",
        found.join("\n")
    );
}

#[test]
fn no_module_imports_a_higher_layer() {
    let mut found = Vec::new();
    for (krate, layers) in LAYERS {
        let graph = Graph::of_crate(&workspace().join(krate));
        found.extend(
            layer_breaks(&graph, layers)
                .into_iter()
                .map(|b| format!("{krate}: {b}")),
        );
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// A module's layer: that of the longest listed path it is or is under; the root is above
/// every layer.
fn layer_of(layers: &[&[&str]], module: &str) -> Option<usize> {
    if module.is_empty() {
        return Some(usize::MAX);
    }
    let mut best: Option<(usize, usize)> = None;
    for (layer, names) in layers.iter().enumerate() {
        for n in names.iter() {
            let under = module == *n || module.starts_with(&format!("{n}::"));
            if under && best.is_none_or(|(len, _)| n.len() > len) {
                best = Some((n.len(), layer));
            }
        }
    }
    best.map(|(_, layer)| layer)
}

/// Modules in no layer, and imports of a higher layer.
fn layer_breaks(graph: &Graph, layers: &[&[&str]]) -> Vec<String> {
    let mut found = Vec::new();
    for module in graph.modules.keys() {
        if !module.is_empty() && layer_of(layers, module).is_none() {
            found.push(format!("module {module} is in no layer of LAYERS"));
        }
    }
    for (from, tos) in &graph.edges {
        for to in tos {
            if let (Some(a), Some(b)) = (layer_of(layers, from), layer_of(layers, to))
                && b > a
            {
                found.push(format!(
                    "{} (layer {a}) imports {} (layer {b}): {}",
                    graph.file(from),
                    graph.file(to),
                    graph.names(from, to)
                ));
            }
        }
    }
    found
}

#[test]
fn the_checker_sees_a_loop_and_an_upward_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("a")).expect("mkdir");
    let write = |p: &str, s: &str| fs::write(src.join(p), s).expect("write");
    write("lib.rs", "pub mod a;\nmod b;\n#[cfg(test)]\nmod tests;\n");
    write(
        "a/mod.rs",
        "//! crate::b::Nope in a comment\npub(crate) use inner::X;\nmod inner;\npub struct Y;\n",
    );
    write(
        "a/inner.rs",
        "use super::Y;\npub struct X(Y);\nfn f() -> &'static str { \"crate::b\" }\n",
    );
    write(
        "b.rs",
        "use crate::a::{inner::X, Y};\n#[cfg(test)]\nmod t { use crate::tests::Z; }\n",
    );
    write("tests.rs", "use crate::b::*;\n");
    let graph = Graph::of_crate(dir.path());
    assert_eq!(
        graph.modules.keys().cloned().collect::<Vec<_>>(),
        ["", "a", "a::inner", "b"]
    );
    let circles = graph.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert_eq!(
        circles[0],
        BTreeSet::from(["a".to_string(), "a::inner".to_string()])
    );
    assert_eq!(
        graph.edges.get("b"),
        Some(&BTreeSet::from(["a".to_string(), "a::inner".to_string()]))
    );
    // b imports a: with a above b that runs up; with a below, it holds.
    let up = layer_breaks(&graph, &[&["b"], &["a"]]);
    assert!(up.iter().any(|m| m.contains("(layer 0) imports")), "{up:?}");
    assert!(layer_breaks(&graph, &[&["a"], &["b"]]).is_empty());
    let unlisted = layer_breaks(&graph, &[&["a"]]);
    assert!(
        unlisted
            .iter()
            .any(|m| m.contains("module b is in no layer")),
        "{unlisted:?}"
    );
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// One crate's library files as modules, and which imports which.
struct Graph {
    /// Module path (`""` for the root, `a::b`) -> its file.
    modules: BTreeMap<String, PathBuf>,
    /// Module -> modules it imports.
    edges: BTreeMap<String, BTreeSet<String>>,
    /// (from, to) -> the paths that tie them, for messages.
    ties: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Graph {
    fn of_crate(dir: &Path) -> Graph {
        let src = dir.join("src");
        let mut g = Graph {
            modules: BTreeMap::new(),
            edges: BTreeMap::new(),
            ties: BTreeMap::new(),
        };
        let mut code = BTreeMap::new();
        // A library's root, or a binary's for a binary-only crate (xdsctl).
        let root = ["lib.rs", "main.rs"]
            .map(|f| src.join(f))
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{} has neither lib.rs nor main.rs", src.display()));
        let mut todo = vec![(String::new(), root)];
        while let Some((module, file)) = todo.pop() {
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            let text = without_tests(&strip(&text));
            let dir = if module.is_empty() || file.ends_with("mod.rs") {
                file.parent().expect("dir").to_path_buf()
            } else {
                file.with_extension("")
            };
            for child in child_mods(&text) {
                let path = if module.is_empty() {
                    child.clone()
                } else {
                    format!("{module}::{child}")
                };
                let flat = dir.join(format!("{child}.rs"));
                let nested = dir.join(&child).join("mod.rs");
                todo.push((path, if flat.exists() { flat } else { nested }));
            }
            g.modules.insert(module.clone(), file);
            code.insert(module, text);
        }
        for (module, text) in &code {
            for path in paths(text) {
                if let Some(to) = g.resolve(module, &path)
                    && to != *module
                {
                    g.edges
                        .entry(module.clone())
                        .or_default()
                        .insert(to.clone());
                    g.ties
                        .entry((module.clone(), to))
                        .or_default()
                        .insert(path.join("::"));
                }
            }
        }
        g
    }

    /// The deepest module a path written in `from` names, if it is one of this crate's.
    fn resolve(&self, from: &str, path: &[String]) -> Option<String> {
        let mut at: Vec<&str> = if from.is_empty() {
            Vec::new()
        } else {
            from.split("::").collect()
        };
        let mut rest = path;
        match path.first().map(String::as_str) {
            Some("crate") => {
                at.clear();
                rest = &path[1..];
            }
            Some("self") => rest = &path[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    at.pop()?;
                    rest = &rest[1..];
                }
            }
            _ => {}
        }
        let relative = !matches!(path[0].as_str(), "crate" | "self" | "super");
        let mut module = at.join("::");
        for (i, seg) in rest.iter().enumerate() {
            let next = if module.is_empty() {
                seg.clone()
            } else {
                format!("{module}::{seg}")
            };
            if !self.modules.contains_key(&next) {
                // A relative path must start at a child module to be ours.
                if relative && i == 0 {
                    return None;
                }
                break;
            }
            module = next;
        }
        Some(module)
    }

    /// Sets of two or more modules that import each other in a loop (Tarjan).
    fn circles(&self) -> Vec<BTreeSet<String>> {
        struct T<'g> {
            g: &'g Graph,
            index: BTreeMap<&'g str, usize>,
            low: BTreeMap<&'g str, usize>,
            stack: Vec<&'g str>,
            on: BTreeSet<&'g str>,
            out: Vec<BTreeSet<String>>,
        }
        fn visit<'g>(t: &mut T<'g>, v: &'g str) {
            let i = t.index.len();
            t.index.insert(v, i);
            t.low.insert(v, i);
            t.stack.push(v);
            t.on.insert(v);
            for w in t.g.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if t.low[v] == t.index[v] {
                let mut set = BTreeSet::new();
                while let Some(w) = t.stack.pop() {
                    t.on.remove(w);
                    set.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if set.len() > 1 {
                    t.out.push(set);
                }
            }
        }
        let mut t = T {
            g: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on: BTreeSet::new(),
            out: Vec::new(),
        };
        for v in self.modules.keys() {
            if !t.index.contains_key(v.as_str()) {
                visit(&mut t, v);
            }
        }
        t.out
    }

    fn file(&self, module: &str) -> String {
        let p = &self.modules[module];
        let parts: Vec<_> = p.components().rev().take(3).collect();
        parts
            .into_iter()
            .rev()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn names(&self, from: &str, to: &str) -> String {
        self.ties
            .get(&(from.to_string(), to.to_string()))
            .map(|s| s.iter().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    }

    fn describe(&self, circle: &BTreeSet<String>) -> String {
        let mut lines = vec![format!("{} files", circle.len())];
        for from in circle {
            for to in self.edges.get(from).into_iter().flatten() {
                if circle.contains(to) {
                    lines.push(format!(
                        "  {} -> {}: {}",
                        self.file(from),
                        self.file(to),
                        self.names(from, to)
                    ));
                }
            }
        }
        lines.join("\n")
    }
}

/// The source without comments, string and character literals.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'#') | Some(b'"')) && !ident(b, i) {
            // Raw string: r#*" ... "#*
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\''), or a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                (i + 2..b.len()).find(|&k| b[k] == b'\'')
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.push_str("' '");
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            // Copy one UTF-8 character.
            let ch = src[i..].chars().next().expect("char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// The code without `#[cfg(test)]` items (the attribute and the item after it).
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at + "#[cfg(test)]".len()..];
        let b = item.as_bytes();
        let mut depth = 0usize;
        let mut end = b.len();
        for (k, &c) in b.iter().enumerate() {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Names of `mod NAME;` declarations (modules in their own files).
fn child_mods(code: &str) -> Vec<String> {
    let words: Vec<&str> = code.split(|c: char| c.is_whitespace()).collect();
    let mut out = Vec::new();
    for w in words.windows(2) {
        if w[0] == "mod"
            && let Some(name) = w[1].strip_suffix(';')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            out.push(name.to_string());
        }
    }
    out
}

/// Every path the code names: `use` trees expanded, and `a::b::c` paths in code.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if (c.is_ascii_alphabetic() || c == b'_') && !ident(b, i) {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &code[start..i];
            if word == "use" {
                let end = code[i..].find(';').map_or(b.len(), |e| i + e);
                expand(code[i..end].trim(), &mut Vec::new(), &mut out);
                i = end;
            } else if word.contains("::") && !code[..start].ends_with('$') {
                let segs: Vec<String> = word
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                if segs.len() > 1 {
                    out.push(segs);
                }
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into paths, each under `prefix`.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let n = prefix.len();
        prefix.extend(segments(head));
        for part in split_top(inner) {
            expand(part, prefix, out);
        }
        prefix.truncate(n);
    } else {
        let path = tree.split(" as ").next().unwrap_or(tree);
        let mut full = prefix.clone();
        full.extend(segments(path));
        if full.last().is_some_and(|s| s == "*" || s == "self") {
            full.pop();
        }
        if !full.is_empty() {
            out.push(full);
        }
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits at commas outside braces.
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}
