//! dive's file tree (`filetree.FileTree`), with the same semantics: one
//! node per path component, children visited in byte order of their
//! names, intermediate directories a layer does not list get an empty
//! payload, `.wh..wh..` entries (opaque markers) are never added, and
//! whiteout files (`.wh.NAME`) are ordinary nodes until a tree is stacked.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::gofmt::clean_path;

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const DOUBLE_WHITEOUT_PREFIX: &str = ".wh..wh..";

/// Go's `os.FileMode` bits, as dive's JSON carries them.
pub mod mode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
}

/// A tar entry's metadata (dive's `FileInfo`; `hash` is berth's content
/// hash, not serialised, as in dive).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub path: String,
    pub type_flag: u8,
    pub link_name: String,
    #[serde(skip)]
    pub hash: u64,
    pub size: i64,
    pub file_mode: u32,
    pub uid: i64,
    pub gid: i64,
    pub is_dir: bool,
}

impl FileInfo {
    /// The permission string dive shows (`rwxr-xr-x`, with s/S/t/T).
    pub fn perm_string(&self) -> String {
        let m = self.file_mode;
        let bit = |b: u32| m & b != 0;
        let mut s = String::with_capacity(9);
        let x = |s: &mut String, r, w, xb, special: bool, set: char, unset: char| {
            s.push(if bit(r) { 'r' } else { '-' });
            s.push(if bit(w) { 'w' } else { '-' });
            s.push(match (bit(xb), special) {
                (true, true) => set,
                (true, false) => 'x',
                (false, true) => unset,
                (false, false) => '-',
            });
        };
        x(&mut s, 0o400, 0o200, 0o100, bit(mode::SETUID), 's', 'S');
        x(&mut s, 0o040, 0o020, 0o010, bit(mode::SETGID), 's', 'S');
        x(&mut s, 0o004, 0o002, 0o001, bit(mode::STICKY), 't', 'T');
        s
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: Box<str>,
    pub parent: u32,
    pub children: BTreeMap<Box<str>, u32>,
    pub info: FileInfo,
}

impl Node {
    pub fn is_whiteout(&self) -> bool {
        self.name.starts_with(WHITEOUT_PREFIX)
    }
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }
}

/// Node 0 is the root.
#[derive(Debug, Clone)]
pub struct FileTree {
    pub nodes: Vec<Node>,
    /// Σ of the sizes of the layer's tar entries (dive's `FileSize`).
    pub file_size: u64,
}

pub const ROOT: u32 = 0;

impl Default for FileTree {
    fn default() -> Self {
        Self::new()
    }
}

impl FileTree {
    pub fn new() -> FileTree {
        FileTree {
            nodes: vec![Node {
                name: "".into(),
                parent: u32::MAX,
                children: BTreeMap::new(),
                info: FileInfo::default(),
            }],
            file_size: 0,
        }
    }

    pub fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }

    /// dive's `Path()`: `/a/b/c`, a whiteout prefix dropped from the
    /// node's own name.
    pub fn path(&self, id: u32) -> String {
        let mut parts = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            let n = self.node(cur);
            let name: &str = if cur == id {
                n.name.strip_prefix(WHITEOUT_PREFIX).unwrap_or(&n.name)
            } else {
                &n.name
            };
            parts.push(name);
            cur = n.parent;
        }
        parts.reverse();
        let p = format!("/{}", parts.join("/"));
        if p.contains("//") {
            p.replace("//", "/")
        } else {
            p
        }
    }

    fn add_child(&mut self, parent: u32, name: &str) -> u32 {
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            name: name.into(),
            parent,
            children: BTreeMap::new(),
            info: FileInfo::default(),
        });
        self.nodes[parent as usize].children.insert(name.into(), id);
        id
    }

    /// dive's `AddPath`: `None` for an opaque marker (never added).
    pub fn add_path(&mut self, path: &str, data: FileInfo) -> Option<u32> {
        let path = clean_path(path);
        if path == "." {
            return None;
        }
        let names: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut node = ROOT;
        let last = names.len() - 1;
        let mut data = Some(data);
        for (idx, name) in names.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            node = match self.node(node).children.get(*name) {
                Some(&c) => c,
                None => {
                    if name.starts_with(DOUBLE_WHITEOUT_PREFIX) {
                        return None;
                    }
                    self.add_child(node, name)
                }
            };
            if idx == last {
                if let Some(d) = data.take() {
                    self.nodes[node as usize].info = d;
                }
            }
        }
        Some(node)
    }

    /// dive's `GetNode`.
    pub fn get_node(&self, path: &str) -> Option<u32> {
        let mut node = ROOT;
        for name in path.trim_matches('/').split('/') {
            if name.is_empty() {
                continue;
            }
            node = *self.node(node).children.get(name)?;
        }
        Some(node)
    }

    /// dive's `RemovePath` (detaches the subtree; its nodes stay in the
    /// arena, unreachable).
    pub fn remove_path(&mut self, path: &str) -> bool {
        match self.get_node(path) {
            Some(ROOT) | None => false,
            Some(id) => {
                let n = self.node(id);
                let (parent, name) = (n.parent, n.name.clone());
                self.nodes[parent as usize].children.remove(&name);
                true
            }
        }
    }

    /// Children first, then the node; siblings in name order; never the
    /// root. `visit` returning `Err` stops the walk.
    pub fn visit_child_first<'t, E>(
        &'t self,
        from: u32,
        visit: &mut impl FnMut(u32, &'t Node) -> Result<(), E>,
    ) -> Result<(), E> {
        let n = self.node(from);
        for &c in n.children.values() {
            self.visit_child_first(c, visit)?;
        }
        if from != ROOT {
            visit(from, n)?;
        }
        Ok(())
    }

    /// dive's `Stack`: `upper` on top of this tree.
    pub fn stack(&mut self, upper: &FileTree) {
        let _ = upper.visit_child_first(ROOT, &mut |id, n| -> Result<(), ()> {
            let p = upper.path(id);
            if n.is_whiteout() {
                self.remove_path(&p);
            } else {
                self.add_path(&p, n.info.clone());
            }
            Ok(())
        });
    }

    /// Σ of the payload sizes of a node and everything below it.
    pub fn subtree_size(&self, id: u32) -> i64 {
        let mut total = 0;
        let _ = self.visit_child_first(id, &mut |_, n| -> Result<(), ()> {
            total += n.info.size;
            Ok(())
        });
        total
    }
}
